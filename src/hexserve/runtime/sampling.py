"""How to pick each request's tokens and when to stop (vLLM's SamplingParams, the parts we support)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hexserve.errors import SpecError


@dataclass
class SamplingParams:
    """temperature 0 is greedy; top_k 0 (or -1) and top_p 1 switch those filters off.

    Generation ends at max_tokens, at an end-of-sequence token (unless ignore_eos), at any of
    stop_token_ids, or when the text comes to contain one of `stop` (the text is cut before it).
    With logprobs=True each output carries the log-probability of every chosen token under the model.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: bool = False
    skip_special_tokens: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = list(self.stop or [])
        self.stop_token_ids = list(self.stop_token_ids or [])
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise SpecError(f"sampling: max_tokens must be a whole number > 0, got {self.max_tokens!r}")
        if not self.temperature >= 0:
            raise SpecError(f"sampling: temperature must be >= 0 (0 is greedy), got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise SpecError(f"sampling: top_p must be in (0, 1] (1 disables it), got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            raise SpecError(f"sampling: top_k must be a whole number >= 0 (0 or -1 disables it), got {self.top_k!r}")
        if self.seed is not None and not isinstance(self.seed, int):
            raise SpecError(f"sampling: seed must be a whole number or None, got {self.seed!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise SpecError(f"sampling: stop must be non-empty strings, got {self.stop!r}")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            raise SpecError(f"sampling: stop_token_ids must be token ids >= 0, got {self.stop_token_ids!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
