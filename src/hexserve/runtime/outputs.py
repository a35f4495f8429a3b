"""What `LLM.generate` returns per prompt (the shape of vLLM's RequestOutput)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class RequestOutput:
    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None  # "stop" | "length" | "error"
    logprobs: list[float] | None = None  # of each chosen token, when SamplingParams.logprobs
    error: str | None = None  # why the request was refused (the others in the batch still run)

    @property
    def ok(self) -> bool:
        return self.error is None
