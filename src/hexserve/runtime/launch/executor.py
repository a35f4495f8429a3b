"""The leader's side of one replica's workers: send each step to all of them, collect the sampled
tokens from the one that samples, and notice when a worker dies, reports an error or stops answering.

Steps go out through one sender thread per worker, so that a big step (a long prompt's metadata) never
blocks the leader while a busy worker has not yet read its pipe.
"""

from __future__ import annotations

import pickle
import queue
import threading
import time
from dataclasses import dataclass, field

from hexserve.runtime.launch.topology import WorkerSpec
from hexserve.runtime.step import StepInput

Results = list[tuple[int, float]]


@dataclass(eq=False)
class WorkerHandle:
    spec: WorkerSpec
    process: object  # multiprocessing Process
    conn: object  # the leader's end of the worker's pipe
    outbox: queue.Queue = field(default_factory=queue.Queue)
    thread: threading.Thread | None = None

    def start_sender(self) -> None:
        self.thread = threading.Thread(target=self._send_loop, name=f"hexserve-send-{self.spec.rank}", daemon=True)
        self.thread.start()

    def send(self, data: bytes) -> None:
        self.outbox.put(data)

    def _send_loop(self) -> None:
        while (data := self.outbox.get()) is not None:
            try:
                self.conn.send_bytes(data)
            except (OSError, BrokenPipeError):
                return  # the worker is gone; the executor notices through its sentinel

    def stop_sender(self) -> None:
        self.outbox.put(None)


class PipelineExecutor:
    def __init__(self, replica: int, workers: list[WorkerHandle], step_timeout_s: float):
        self.replica, self.workers, self.step_timeout_s = replica, workers, step_timeout_s
        self.error: str | None = None
        self.sent: dict[int, tuple[float, set[int]]] = {}  # step_id -> (sent at, ranks yet to answer)
        self.results: dict[int, Results] = {}
        # Per worker rank: steps run and seconds (total, in TP collectives, in stage transfers, receiving
        # KV) summed.
        self.timings: dict[int, list[float]] = {w.spec.rank: [0, 0.0, 0.0, 0.0, 0.0] for w in workers}
        self.kv_bytes: dict[int, tuple[int, int]] = {w.spec.rank: (0, 0) for w in workers}  # (sent, received)
        self.failed_transfers: set[int] = set()  # requests whose KV a worker could not receive (sender died)
        self.closed = False
        self.keepalive: object = None  # the world's TCPStore, held by the first replica's executor
        for w in workers:
            w.start_sender()

    def submit(self, step: StepInput) -> None:
        data = pickle.dumps(("step", step), protocol=pickle.HIGHEST_PROTOCOL)
        self.sent[step.step_id] = (time.monotonic(), {w.spec.rank for w in self.workers})
        for w in self.workers:
            w.send(data)

    def waitables(self) -> list:
        return [w.conn for w in self.workers] + [w.process.sentinel for w in self.workers]

    def poll(self) -> list[tuple[int, Results]]:
        """The results of the steps every worker has finished, in step order."""
        if self.error:
            return []
        for w in self.workers:
            self._read(w)
        if not self.error:
            self._check_alive()
        done = []
        while self.sent:
            step_id = min(self.sent)
            if self.sent[step_id][1] or step_id not in self.results:
                break
            del self.sent[step_id]
            done.append((step_id, self.results.pop(step_id)))
        return [] if self.error else done

    def _read(self, w: WorkerHandle) -> None:
        try:
            while not self.error and w.conn.poll():
                message = w.conn.recv()
                if message[0] == "error":
                    self.error = f"replica {self.replica} failed: {message[1]}"
                    return
                step_id, seconds, (sent, received, failed) = message[1], message[-2], message[-1]
                self.kv_bytes[w.spec.rank] = (sent, received)
                self.failed_transfers.update(failed)
                if message[0] == "result":
                    self.results[step_id] = message[2]
                timing = self.timings[w.spec.rank]
                timing[0] += 1
                for i, s in enumerate(seconds):
                    timing[i + 1] += s
                if step_id in self.sent:
                    self.sent[step_id][1].discard(w.spec.rank)
        except (EOFError, OSError):
            self._died(w)

    def _check_alive(self) -> None:
        for w in self.workers:
            if not w.process.is_alive():
                self._died(w)
                return
        if self.sent:
            step_id = min(self.sent)
            sent_at, silent = self.sent[step_id]
            if time.monotonic() - sent_at > self.step_timeout_s:
                names = "; ".join(w.spec.name for w in self.workers if w.spec.rank in silent)
                self.error = (f"replica {self.replica} failed: step {step_id} unfinished after "
                              f"{self.step_timeout_s:g} s (a worker hangs); no answer from {names}")

    def _died(self, w: WorkerHandle) -> None:
        w.process.join(0.5)
        self.error = f"replica {self.replica} failed: the worker on {w.spec.name} died (exit code {w.process.exitcode})"

    def shutdown(self) -> None:
        """Stop the workers: politely, then by force. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        stop = pickle.dumps(("stop", None))
        for w in self.workers:
            if w.process.is_alive() and not self.error:
                w.send(stop)
            w.stop_sender()
        deadline = time.monotonic() + (5.0 if not self.error else 0.0)
        for w in self.workers:
            w.process.join(max(0.0, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join(5.0)
            w.conn.close()
