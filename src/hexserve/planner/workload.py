"""What a plan is optimised for: mean request shape, latency targets and the objective."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from hexserve.errors import SpecError

OBJECTIVES = ("throughput", "per-dollar", "latency")

# HexGen-2's workload classes: mean (prompt, output) tokens of each class of the Azure conversation trace
# (data/traces/azure_llm_2023_conv.csv, 19,366 requests; a prompt over 512 tokens is heavy prefill (HP),
# an output over 128 tokens heavy decode (HD)); request counts 4,103 / 7,620 / 2,110 / 5,533. Computed by
#   python3 -c "import csv; from collections import defaultdict; s = defaultdict(lambda: [0, 0, 0])
#   for r in csv.DictReader(open('data/traces/azure_llm_2023_conv.csv')):
#       p, o = int(r['ContextTokens']), int(r['GeneratedTokens'])
#       k = ('HP' if p > 512 else 'LP') + ('HD' if o > 128 else 'LD'); s[k][0] += 1; s[k][1] += p; s[k][2] += o
#   print({k: (round(p / n), round(o / n)) for k, (n, p, o) in sorted(s.items())})"
WORKLOAD_CLASSES = {"HPLD": (2606, 72), "HPHD": (1210, 387), "LPHD": (229, 178), "LPLD": (356, 85)}


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


def class_lengths(name: str) -> tuple[int, int]:
    """Mean (prompt, output) tokens of a HexGen-2 workload class (HPLD, HPHD, LPHD, LPLD)."""
    lengths = WORKLOAD_CLASSES.get(name.upper())
    if lengths is None:
        raise SpecError(f"--workload: unknown class {name!r}; use one of {', '.join(WORKLOAD_CLASSES)}")
    return lengths


def check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise SpecError(f"--objective: unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    return objective
