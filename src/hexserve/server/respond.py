"""Turning a request's stream of Deltas into an HTTP answer: one JSON body, or server-sent events
(`data: {chunk}` lines and a final `data: [DONE]`, as OpenAI and vLLM send them).

A client that goes away aborts its request, which frees its KV blocks: noticed either when writing to
it fails, or by polling between tokens while the request waits (e.g. in the queue).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import StreamingResponse

from hexserve.server.engine_loop import Delta, EngineLoop, RequestStream

DISCONNECT_POLL_S = 0.5


async def deltas(stream: RequestStream, raw: Request) -> AsyncIterator[Delta]:
    """The request's deltas up to the final one; raises ConnectionAbortedError if the client left."""
    while True:
        try:
            delta = await asyncio.wait_for(stream.get(), timeout=DISCONNECT_POLL_S)
        except TimeoutError:
            if await raw.is_disconnected():
                raise ConnectionAbortedError from None
            continue
        yield delta
        if delta.finish_reason is not None:
            return


async def collect(engine: EngineLoop, stream: RequestStream, raw: Request) -> tuple[str, Delta]:
    """The whole text and the final delta (non-streaming requests)."""
    parts: list[str] = []
    try:
        async for delta in deltas(stream, raw):
            if delta.error is not None:
                raise delta.error
            parts.append(delta.text)
    except (ConnectionAbortedError, asyncio.CancelledError):
        engine.abort(stream.request_id)
        raise
    return "".join(parts), delta


def sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, separators=(',', ':'))}\n\n"


class AbortOnClose(StreamingResponse):
    """A streaming response that aborts its request however the stream ends early (client gone, write
    failed, server cancelled it); aborting a finished request is a no-op."""

    def __init__(self, body: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.on_close = on_close

    async def stream_response(self, send) -> None:
        try:
            await super().stream_response(send)
        finally:
            self.on_close()


def stream_events(engine: EngineLoop, stream: RequestStream, raw: Request,
                  chunks: Callable[[Delta], list[dict]], usage_chunk: Callable[[Delta], dict] | None) -> AbortOnClose:
    async def body() -> AsyncIterator[str]:
        try:
            async for delta in deltas(stream, raw):
                for chunk in chunks(delta):  # the last one carries finish_reason, "abort" and "error" too
                    yield sse(chunk)
                if delta.finish_reason is not None and usage_chunk is not None:
                    yield sse(usage_chunk(delta))
                if delta.error is not None:  # then why, e.g. the drain timeout at shutdown
                    yield sse(delta.error.body())
        except ConnectionAbortedError:
            return
        yield sse("[DONE]")

    return AbortOnClose(body(), lambda: engine.abort(stream.request_id))

