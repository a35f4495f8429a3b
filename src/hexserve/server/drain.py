"""Graceful shutdown: on SIGTERM or SIGINT the server refuses new /v1 requests (503) and lets every
request it has accepted run to its end, then stops. uvicorn's own shutdown waits a fixed time and then
cuts open streams; here the wait is sized to the work, and a request that outlives it still gets a
proper end (finish_reason "abort" and an error naming the drain timeout), never a cut connection.

A second signal ends the drain at once, the same way as a timeout.
"""

from __future__ import annotations

import asyncio
import time

import uvicorn

from hexserve.server.engine_loop import EngineLoop
from hexserve.server.errors import APIError

FLOOR_S = 30.0  # the least drain: slack for a pace measured on a quiet engine (and Kubernetes' default grace)
MARGIN = 2.0  # times the measured pace: a loaded host can step slower than it did before the signal
TAIL_S = 10.0  # after the timeout, what the ended requests get to write their last chunk
CLOSE_S = 5.0  # uvicorn's wait for connections after the drain: only idle or stuck clients are left
POLL_S = 0.05


def shutting_down() -> APIError:
    return APIError(503, "the server is shutting down and takes no new requests; retry on another replica")


class Drain:
    """The server's shutdown state: whether it is draining, and how many /v1 requests it is answering."""

    def __init__(self, engine: EngineLoop, timeout: float | None = None):
        self.engine, self.timeout = engine, timeout
        self.draining = False
        self.active = 0  # /v1 requests between arrival and their last byte sent (DrainGate counts them)
        self.deadline = float("inf")
        self.why = ""

    def timeout_s(self) -> float:
        """--drain-timeout, else twice what the accepted requests need at the engine's pace, at least 30 s."""
        if self.timeout is not None:
            return self.timeout
        return max(FLOOR_S, MARGIN * self.engine.drain_seconds())

    async def run(self) -> None:
        """Refuse new requests, wait for the accepted ones; past the timeout, end them with "abort"."""
        self.draining = True
        timeout = self.timeout_s()
        self.why = f"the drain timeout ({timeout:g} s, --drain-timeout) expired"
        print(f"hexserve serve: draining {self.active} requests, up to {timeout:.1f} s", flush=True)
        self.deadline = time.monotonic() + timeout
        await self._until_idle()
        if self.active:
            message = f"the server shut down before this request finished: {self.why}"
            self.engine.expire(APIError(503, message, code="drain_timeout"))
            self.deadline = time.monotonic() + TAIL_S
            await self._until_idle()

    def hurry(self) -> None:
        """A second signal: end the drain now."""
        self.why = "a second signal ended the drain"
        self.deadline = 0.0

    async def _until_idle(self) -> None:
        # Polling, not an event: the count changes in DrainGate and the deadline in hurry(), both cheap.
        while self.active and time.monotonic() < self.deadline:
            await asyncio.sleep(POLL_S)


class DrainGate:
    """ASGI middleware: counts the /v1 requests being answered, and refuses new ones once draining."""

    def __init__(self, app, drain: Drain):
        self.app, self.drain = app, drain

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1"):
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await shutting_down().response()(scope, receive, send)
            return
        self.drain.active += 1
        try:
            await self.app(scope, receive, send)  # returns once the whole body, streamed or not, is sent
        finally:
            self.drain.active -= 1


class DrainingServer(uvicorn.Server):
    """uvicorn whose SIGTERM/SIGINT runs `Drain.run` before its usual shutdown. The signal is not
    raised again afterwards (uvicorn does that), so a drained server exits 0."""

    def __init__(self, config: uvicorn.Config, drain: Drain):
        super().__init__(config)
        self.drain = drain
        self.signals = self.handled = 0
        self.draining: asyncio.Task | None = None

    def handle_exit(self, sig, frame) -> None:
        # A signal handler: only count; the event loop acts on it at its next tick (every 0.1 s).
        self.signals += 1

    async def on_tick(self, counter: int) -> bool:
        if self.signals > self.handled:
            if self.draining is None:
                self.draining = asyncio.create_task(self.drain.run())
            else:
                self.drain.hurry()
            self.handled = self.signals
        should_exit = await super().on_tick(counter)
        return self.draining.done() if self.draining is not None else should_exit


def serve(app, host: str, port: int, log_level: str) -> None:
    """Run `create_app`'s app until a signal has drained it."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=CLOSE_S)
    DrainingServer(config, app.state.drain).run()
