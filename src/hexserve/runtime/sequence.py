"""One request as the scheduler sees it: its tokens, how many are in the KV cache, its blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum, auto

from hexserve.runtime.sampling import SamplingParams


class SequenceStatus(Enum):
    WAITING = auto()
    RUNNING = auto()
    FINISHED = auto()


@dataclass(eq=False)
class Sequence:
    seq_id: int
    token_ids: list[int]
    params: SamplingParams
    max_len: int  # prompt + max_tokens, capped by the context
    num_prompt_tokens: int = 0
    num_computed_tokens: int = 0  # tokens whose K/V are in the cache
    block_table: list[int] = field(default_factory=list)
    status: SequenceStatus = SequenceStatus.WAITING
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"
    logprobs: list[float] = field(default_factory=list)
    text: str = ""  # output text, kept only while stop strings are watched
    stopped_on_string: bool = False
    seed: int | None = None  # starts the request's sampling stream where the last stage samples; None: greedy
    arrival: int = 0  # admission order; preemption picks the newest
    replica: int = 0  # index of the replica that serves it
    error: str | None = None  # why it ended with finish_reason "error" (its replica failed)

    def __post_init__(self) -> None:
        self.num_prompt_tokens = self.num_prompt_tokens or len(self.token_ids)

    def __len__(self) -> int:
        return len(self.token_ids)

    @property
    def output_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def is_finished(self) -> bool:
        return self.status == SequenceStatus.FINISHED

    @property
    def prefilling(self) -> bool:
        """More than the last token still lacks K/V: the next step computes a span, not one token."""
        return len(self.token_ids) - self.num_computed_tokens > 1

    def append(self, token_id: int, logprob: float) -> None:
        self.token_ids.append(token_id)
        self.logprobs.append(logprob)
