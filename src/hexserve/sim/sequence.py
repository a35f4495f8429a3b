"""One request as the simulator tracks it: its lengths, progress, KV blocks and timestamps."""

from __future__ import annotations

from dataclasses import dataclass

NAN = float("nan")


@dataclass(slots=True, eq=False)
class Seq:
    id: int
    arrival: float
    prompt: int
    output: int
    generated: int = 0  # output tokens produced so far (the prefill produces the first)
    blocks: int = 0  # KV blocks held on the replica that now computes it
    held: int = 0  # disaggregated: blocks still held on the prefill replica while its KV is sent
    first_token: float = NAN
    finish: float = NAN
    preemptions: int = 0
    entry: int = -1  # replica that prefilled it
    decoder: int = -1  # disaggregated: replica that decoded it
    rejected: bool = False  # longer than any KV pool on its path can hold (vLLM refuses such prompts)

    @property
    def context(self) -> int:
        """Tokens whose KV the next decode step needs: the prompt and every generated token."""
        return self.prompt + self.generated

    @property
    def done(self) -> bool:
        return self.generated >= self.output
