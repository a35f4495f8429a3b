"""From a validated request body to what the engine takes: prompt token ids and SamplingParams.

Everything a user can get wrong is checked here, before the request reaches the engine thread, so
that it is answered with a 400 naming the field (vLLM's checks: the model name, the context length).
"""

from __future__ import annotations

from hexserve.errors import SpecError
from hexserve.runtime.engine import LLM
from hexserve.runtime.sampling import SamplingParams
from hexserve.server.errors import APIError
from hexserve.server.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields


def check_model(req: SamplingFields, served: list[str]) -> None:
    if req.model not in served:
        raise APIError(404, f"model: {req.model!r} is not served here; use one of {', '.join(served)}",
                       param="model", code="model_not_found")


def completion_prompt(llm: LLM, req: CompletionRequest) -> list[int]:
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise APIError(400, f"prompt: a batch of {len(prompt)} prompts; send one prompt per request",
                           param="prompt")
        prompt = prompt[0]
    ids = _encode(llm, prompt, "prompt") if isinstance(prompt, str) else list(prompt)
    if not ids:
        raise APIError(400, "prompt: it is empty; give at least one token", param="prompt")
    vocab = llm.config.spec.vocab_size
    if min(ids) < 0 or max(ids) >= vocab:
        raise APIError(400, f"prompt: token ids must lie in [0, {vocab})", param="prompt")
    return ids


def chat_prompt(llm: LLM, req: ChatCompletionRequest) -> list[int]:
    messages = [{"role": m.role, "content": m.text()} for m in req.messages]
    try:
        return llm.apply_chat_template(messages)
    except SpecError as e:
        raise APIError(400, str(e), param="messages") from None


def sampling_params(llm: LLM, req: SamplingFields, prompt_len: int, where: str) -> SamplingParams:
    room = llm.max_model_len - prompt_len
    if room <= 0:
        raise APIError(400, f"{where}: {prompt_len} tokens leave no room in the {llm.max_model_len}-token context",
                       param=where, code="context_length_exceeded")
    asked = getattr(req, "max_completion_tokens", None) or req.max_tokens
    if asked is not None and asked > room:
        raise APIError(400, f"max_tokens: this model's context is {llm.max_model_len} tokens; the request has "
                       f"{prompt_len} in the {where} and asks for {asked} more", param="max_tokens",
                       code="context_length_exceeded")
    try:
        return SamplingParams(**req.sampling_kwargs(asked or room))
    except SpecError as e:  # "sampling: top_k must ..." -> param top_k
        message = str(e).removeprefix("sampling: ")
        raise APIError(400, message, param=message.split(" ", 1)[0]) from None


def _encode(llm: LLM, text: str, where: str) -> list[int]:
    try:
        return llm.encode(text)
    except SpecError as e:
        raise APIError(400, str(e), param=where) from None
