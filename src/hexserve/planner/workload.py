"""What a plan is optimised for: mean request shape, latency targets and the objective."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hexserve.errors import SpecError

OBJECTIVES = ("throughput", "per-dollar", "latency")


@dataclass(frozen=True)
class Workload:
    """Mean prompt and output lengths of the requests, and the SLOs a plan must meet (None: no target)."""

    prompt_len: int = 512
    output_len: int = 128
    slo_ttft: float | None = None  # seconds to the first token
    slo_tpot: float | None = None  # seconds per output token after the first

    def __post_init__(self) -> None:
        if self.prompt_len <= 0:
            raise SpecError(f"--prompt-len: must be > 0 (got {self.prompt_len})")
        if self.output_len <= 0:
            raise SpecError(f"--output-len: must be > 0 (got {self.output_len})")
        for name in ("slo_ttft", "slo_tpot"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SpecError(f"--{name.replace('_', '-')}: must be > 0 seconds (got {value})")

    @property
    def seq_len(self) -> int:
        """KV tokens one sequence holds when it finishes: the planner reserves this much per sequence."""
        return self.prompt_len + self.output_len

    @property
    def mean_context(self) -> int:
        """Mean context of a decoding sequence: the prompt and half the output."""
        return self.prompt_len + self.output_len // 2

    @property
    def decode_steps(self) -> int:
        """Decode steps of one request: the prefill already yields the first token."""
        return self.output_len - 1

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Workload:
        return cls(**data)


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise SpecError(f"--objective: unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    return objective
