"""One streamed request to an OpenAI-compatible /v1/completions endpoint, timed token by token
(vLLM benchmark_serving's `openai` backend: stream, `ignore_eos`, `max_tokens` = the trace's output)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class RequestInput:
    prompt: str
    prompt_len: int  # what the trace asked for
    output_len: int


@dataclass
class RequestResult:
    success: bool = False
    error: str = ""
    ttft: float = 0.0  # seconds from send to the first chunk with text
    latency: float = 0.0  # seconds from send to the last chunk
    itl: list[float] = field(default_factory=list)  # gaps between chunks with text
    prompt_tokens: int | None = None  # from usage, when the server reports it
    output_tokens: int = 0
    text: str = ""


def payload(model: str, req: RequestInput) -> dict:
    return {
        "model": model,
        "prompt": req.prompt,
        "max_tokens": req.output_len,
        "temperature": 0.0,
        "ignore_eos": True,  # vLLM's extra field: the output has exactly max_tokens tokens
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def send(client: httpx.AsyncClient, url: str, model: str, req: RequestInput) -> RequestResult:
    result = RequestResult()
    start = last = time.perf_counter()
    chunks_with_text = 0
    try:
        async with client.stream("POST", url, json=payload(model, req)) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                result.error = f"HTTP {response.status_code}: {body[:300]}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    result.error = str(chunk["error"].get("message", chunk["error"]))
                    return result
                now = time.perf_counter()
                text = "".join(c.get("text") or "" for c in chunk.get("choices") or [])
                if text:
                    if chunks_with_text == 0:
                        result.ttft = now - start
                    else:
                        result.itl.append(now - last)
                    last = now
                    chunks_with_text += 1
                    result.text += text
                if chunk.get("usage"):
                    result.prompt_tokens = chunk["usage"].get("prompt_tokens")
                    result.output_tokens = chunk["usage"].get("completion_tokens", 0)
        result.latency = last - start
        result.output_tokens = result.output_tokens or chunks_with_text
        result.success = chunks_with_text > 0
        if not result.success:
            result.error = "no text came back"
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        result.error = f"{type(e).__name__}: {e}"
    return result
