"""One background thread owns the engine: it takes new requests and aborts from a command queue between
steps, steps the engine while there is work (so requests from every client batch together), and
pushes each request's new text onto that request's asyncio queue in the server's event loop.

Only this thread touches the `LLM`; HTTP handlers talk to it through `submit` and `abort`. The thread is
the one worker of a `ThreadPoolExecutor`, so `hexserve serve` can build the LLM on it first: then one
thread does all the process's OpenMP work. A second thread that runs parallel regions (the one that
loaded the model) gives libgomp more threads than cores, and libgomp then all but stops its idle threads
spinning, so every parallel region of a step pays a wake-up (docs/server.md: 64 tokens took 2.2 s on the
loading thread, 3.2 s on another).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from hexserve.runtime.engine import LLM, Request
from hexserve.runtime.sampling import SamplingParams
from hexserve.runtime.sequence import Sequence
from hexserve.server.errors import APIError
from hexserve.server.metrics import Metrics

log = logging.getLogger("hexserve.server")
POLL_S = 0.5  # how long the idle thread waits for a command before looking at the stop flag again
EMA = 0.2  # weight of the newest step in the measured pace: recent batches matter, one slow step does not
SHUTDOWN = APIError(503, "the server is shutting down; the request was not finished")


@dataclass
class Delta:
    """What a request gained since the last one: new text and tokens; the last one has finish_reason."""

    text: str
    num_prompt_tokens: int
    num_output_tokens: int
    finish_reason: str | None = None
    error: APIError | None = None


class RequestStream:
    """The handler's end: an asyncio queue fed from the engine thread."""

    def __init__(self, request_id: int, loop: asyncio.AbstractEventLoop):
        self.request_id, self.loop = request_id, loop
        self.queue: asyncio.Queue[Delta] = asyncio.Queue()

    def put(self, delta: Delta) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, delta)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass

    async def get(self) -> Delta:
        return await self.queue.get()


@dataclass(eq=False)
class Tracked:
    stream: RequestStream
    prompt: list[int]
    params: SamplingParams
    arrival: float = field(default_factory=time.perf_counter)
    handle: Request | None = None  # what LLM.add_request returned
    sent_text: str = ""
    sent_tokens: int = 0
    first_token_at: float | None = None

    @property
    def seq(self) -> Sequence | None:
        return self.handle.seq if self.handle else None


def engine_thread() -> ThreadPoolExecutor:
    """The thread that will step the engine; `engine_thread().submit(LLM, ...)` builds the engine on it."""
    return ThreadPoolExecutor(1, thread_name_prefix="hexserve-engine")


def _log_crash(done: Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("the engine thread stopped", exc_info=done.exception())


class EngineLoop:
    def __init__(self, llm: LLM, metrics: Metrics, max_queue: int, thread: ThreadPoolExecutor | None = None):
        self.llm, self.metrics, self.max_queue = llm, metrics, max_queue
        self.commands: queue.Queue = queue.Queue()
        self.tracked: dict[int, Tracked] = {}  # engine thread only
        self.ids = itertools.count()
        self.accepted: dict[int, Tracked] = {}  # accepted and not yet answered; guarded by `lock`
        self.lock = threading.Lock()
        self.stopping = False
        # What requests still in flight get when the thread stops: an error, or an abort (drain timeout).
        self.stop_error, self.stop_reason = SHUTDOWN, "error"
        self.step_s = 0.0  # the measured pace (moving averages), for sizing the drain at shutdown
        self.tokens_per_step = 0.0
        self.thread = thread or engine_thread()
        self.running: Future | None = None
        metrics.blocks_total.set(llm.stats().blocks_total)

    # ------------------------------------------------------------------ handler side (event loop thread)

    def start(self) -> None:
        self.running = self.thread.submit(self._run)
        self.running.add_done_callback(_log_crash)

    def is_alive(self) -> bool:
        return self.running is not None and not self.running.done()

    @property
    def in_flight(self) -> int:
        return len(self.accepted)

    def stop(self, timeout: float = 10.0) -> None:
        """Fail every in-flight request (503) and end the thread once its current step is done."""
        self._halt(SHUTDOWN, "error")
        if self.running is not None:
            wait([self.running], timeout)
        self.thread.shutdown(wait=False)

    def expire(self, error: APIError) -> None:
        """End every accepted request now with finish_reason "abort" and `error` (the drain ran out of
        time), after the current step; the thread stops and new requests are refused. Does not wait."""
        self._halt(error, "abort")

    def _halt(self, error: APIError, reason: str) -> None:
        with self.lock:
            if not self.stopping:  # the first reason given is the one requests get
                self.stopping, self.stop_error, self.stop_reason = True, error, reason
        self.commands.put(("wake", None))

    def drain_seconds(self) -> float:
        """How long the accepted requests still need at the measured pace: the longest one at one token
        a step, or all their tokens at the tokens a step has been producing, whichever is longer (an
        upper bound: requests may stop early). 0 before the first step, when there is no pace yet."""
        with self.lock:
            left = [max(t.params.max_tokens - t.sent_tokens, 0) for t in self.accepted.values()]
        if not left:
            return 0.0
        steps = max(max(left), sum(left) / max(self.tokens_per_step, 1.0))
        return steps * self.step_s

    def submit(self, prompt: list[int], params: SamplingParams) -> RequestStream:
        with self.lock:
            if self.stopping:
                raise APIError(503, "the server is shutting down; retry on another replica")
            if self.in_flight >= self.max_queue:
                raise APIError(429, f"the server holds {self.in_flight} requests (--max-queue {self.max_queue}); "
                               "retry later", code="queue_full")
            # Queued under the lock: once `stopping` is set, the thread's last drain sees every add.
            tracked = Tracked(RequestStream(next(self.ids), asyncio.get_running_loop()), prompt, params)
            self.accepted[tracked.stream.request_id] = tracked
            self.commands.put(("add", tracked))
        return tracked.stream

    def abort(self, request_id: int) -> None:
        """Drop a request (its client went away) and free its KV blocks; a no-op once it has finished."""
        self.commands.put(("abort", request_id))

    # ------------------------------------------------------------------ engine thread

    def _run(self) -> None:
        while not self.stopping:
            self._take_commands(block=not self.llm.has_work())
            if self.stopping or not self.llm.has_work():
                continue
            started = time.perf_counter()
            try:
                self.llm.step()
            except Exception as e:  # a bug in the engine: fail what is in flight, keep serving new requests
                log.exception("engine step failed")
                self._fail_all(APIError(500, f"the engine failed: {type(e).__name__}: {e}"), "error", queued=False)
                continue
            tokens = self._publish()
            self._measure(time.perf_counter() - started, tokens)
        self._fail_all(self.stop_error, self.stop_reason, queued=True)

    def _measure(self, seconds: float, tokens: int) -> None:
        weight = EMA if self.step_s else 1.0
        self.step_s += weight * (seconds - self.step_s)
        self.tokens_per_step += weight * (tokens - self.tokens_per_step)

    def _take_commands(self, block: bool) -> None:
        try:
            command = self.commands.get(timeout=POLL_S) if block else self.commands.get_nowait()
            while True:
                self._do(*command)
                command = self.commands.get_nowait()
        except queue.Empty:
            pass

    def _do(self, kind: str, arg) -> None:
        if kind == "add":
            self._add(arg)
        elif kind == "abort":
            tracked = self.tracked.pop(arg, None)
            if tracked is not None:
                self._drop(tracked)
                self._done(tracked, "abort")

    def _add(self, t: Tracked) -> None:
        t.handle = self.llm.add_request(t.prompt, t.params)
        error = t.handle.error
        if error is not None:  # the handler checks first; this is the engine's own refusal
            self._answer(t, Delta("", len(t.prompt), 0, "error", APIError(400, error)))
            return
        self.tracked[t.stream.request_id] = t
        self.metrics.prompt_tokens.inc(len(t.prompt))

    def _drop(self, t: Tracked) -> None:
        """Take an unfinished request out of the engine and free its blocks."""
        if t.handle is not None:
            self.llm.abort(t.handle)

    def _publish(self) -> int:
        """Send each request what it gained in the last step; returns the tokens generated."""
        now = time.perf_counter()
        generated = 0
        for rid, t in list(self.tracked.items()):
            seq = t.seq
            new_tokens = seq.num_output_tokens - t.sent_tokens
            if new_tokens <= 0 and not seq.is_finished:
                continue
            if t.first_token_at is None and seq.num_output_tokens:
                t.first_token_at = now
                self.metrics.ttft.observe(now - t.arrival)
            self.metrics.generation_tokens.inc(max(new_tokens, 0))
            generated += max(new_tokens, 0)
            if seq.is_finished:
                del self.tracked[rid]
                out = self.llm.output(t.handle)
                error = APIError(503, out.error) if out.error else None
                self._answer(t, Delta(out.text[len(t.sent_text):], len(t.prompt), seq.num_output_tokens,
                                      seq.finish_reason, error))
                self._done(t, seq.finish_reason, now)
            else:
                text = self._stable_text(seq)
                t.sent_tokens = seq.num_output_tokens
                if len(text) > len(t.sent_text) and text.startswith(t.sent_text):
                    t.stream.put(Delta(text[len(t.sent_text):], len(t.prompt), seq.num_output_tokens))
                    t.sent_text = text
        self._gauges()
        return generated

    def _stable_text(self, seq: Sequence) -> str:
        """The output text that can no longer change: an incomplete UTF-8 character at the end is held
        back, and so is any tail that could still become the start of a stop string (then cut off)."""
        text = self.llm.decode(seq.output_ids, seq.params)
        text = text.rstrip("\ufffd")
        if seq.params.stop:
            text = text[: max(0, len(text) - max(map(len, seq.params.stop)) + 1)]
        return text

    def _answer(self, t: Tracked, delta: Delta) -> None:
        t.stream.put(delta)
        self._release(t)

    def _release(self, t: Tracked) -> None:
        with self.lock:
            self.accepted.pop(t.stream.request_id, None)

    def _done(self, t: Tracked, reason: str | None, now: float | None = None) -> None:
        self.metrics.finished.labels(finished_reason=reason or "unknown").inc()
        if reason == "abort":
            self._release(t)
            self._gauges()
            return
        now = now or time.perf_counter()
        self.metrics.e2e.observe(now - t.arrival)
        n = t.seq.num_output_tokens if t.seq else 0
        if n > 1 and t.first_token_at is not None:
            self.metrics.tpot.observe((now - t.first_token_at) / (n - 1))

    def _fail_all(self, error: APIError, reason: str, queued: bool) -> None:
        """End every request in flight with `reason` ("error", or "abort" when the drain timed out)."""
        for t in list(self.tracked.values()):
            self._drop(t)
            self._answer(t, Delta("", len(t.prompt), t.sent_tokens, reason, error))
            self.metrics.finished.labels(finished_reason=reason).inc()
        self.tracked.clear()
        while queued:  # at shutdown, requests submitted but never taken are answered too
            try:
                kind, arg = self.commands.get_nowait()
            except queue.Empty:
                break
            if kind == "add":
                self._answer(arg, Delta("", len(arg.prompt), 0, reason, error))
        self._gauges()

    def _gauges(self) -> None:
        stats = self.llm.stats()
        self.metrics.waiting.set(stats.waiting)
        self.metrics.running.set(stats.running)
        self.metrics.blocks_used.set(stats.blocks_total - stats.blocks_free)
        self.metrics.set_replicas(stats.replicas)
