"""One replica's control plane: its schedulers and KV blocks, and the executor that runs its steps.

A replica keeps `micro_batches` batches in flight so that its pipeline stages work at once: each
micro-batch slot has its own scheduler over its own range of KV blocks (vLLM's "virtual engines"), and
a slot schedules its next batch only once its previous one has come back. The executor runs the steps
in this process (`LocalExecutor`) or on the replica's workers (`launch.PipelineExecutor`).
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from hexserve.runtime.kv_cache import BlockManager
from hexserve.runtime.kv_transfer import KvTransfer
from hexserve.runtime.model_runner import ModelRunner
from hexserve.runtime.scheduler import Batch, Scheduler
from hexserve.runtime.sequence import Sequence, SequenceStatus
from hexserve.runtime.step import StepInput, build_step

Results = list[tuple[int, float]]  # (token, logprob) of each sampled row


class Executor(Protocol):
    error: str | None  # set once the executor has failed (a worker died or hung); it runs nothing more

    def submit(self, step: StepInput) -> None: ...

    def poll(self) -> list[tuple[int, Results]]: ...  # (step_id, results) of the steps done, in order

    def waitables(self) -> list: ...  # what multiprocessing.connection.wait can block on; [] if never waits

    def shutdown(self) -> None: ...


class LocalExecutor:
    """The whole model in this process: a step runs when it is submitted."""

    def __init__(self, runner: ModelRunner):
        self.runner, self.error = runner, None
        self.done: deque[tuple[int, Results]] = deque()

    def submit(self, step: StepInput) -> None:
        self.done.append((step.step_id, self.runner.run(step)))

    def poll(self) -> list[tuple[int, Results]]:
        done, self.done = list(self.done), deque()
        return done

    def waitables(self) -> list:
        return []

    def shutdown(self) -> None:
        pass


@dataclass(frozen=True)
class ReplicaStats:
    index: int
    role: str  # colocated | prefill | decode
    waiting: int  # queued for admission (a prefill replica's: also prefilled, awaiting a decode replica)
    running: int
    kv_bytes_sent: int  # KV handed to decode replicas
    kv_bytes_received: int  # KV taken from prefill replicas (and copies of replicated heads)
    kv_seconds: float  # its workers' seconds receiving KV, summed
    failed: bool


@dataclass
class Completed:
    scheduler: Scheduler
    batch: Batch
    results: Results


class Replica:
    def __init__(
        self,
        index: int,
        executor: Executor,
        num_blocks: int,
        block_size: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        micro_batches: int = 1,
        share: float = 1.0,
        role: str = "colocated",
    ):
        self.index, self.executor, self.share, self.role = index, executor, share, role
        self.transfers: list[KvTransfer] = []  # KV handoffs that ride on the next step sent
        self.handing_off: dict[int, tuple[Scheduler, Sequence]] = {}  # seq_id -> prefilled, awaiting a decode replica
        per_slot = num_blocks // micro_batches
        seqs = max(1, max_num_seqs // micro_batches)
        self.slots = [
            Scheduler(BlockManager(per_slot, block_size, first=k * per_slot), seqs, max(max_num_batched_tokens, seqs))
            for k in range(micro_batches)
        ]
        self.in_flight: dict[int, tuple[Scheduler, Batch]] = {}
        self.owner: dict[int, Scheduler] = {}  # seq_id -> the slot that holds it
        self.error: str | None = None
        self.num_routed = 0
        self._step_ids = itertools.count()

    # ------------------------------------------------------------------------------ requests

    def add(self, seq: Sequence) -> None:
        slot = min(self.slots, key=lambda s: len(s.waiting) + len(s.running))
        slot.add(seq)
        self.owner[seq.seq_id] = slot
        self.num_routed += 1

    @property
    def num_unfinished(self) -> int:
        return len(self.owner) + len(self.handing_off)

    # ------------------------------------------------------------------------------ disaggregation

    def detach(self, seq: Sequence) -> None:
        """A prefill replica's request whose prompt is done: out of its scheduler, its KV blocks kept
        until a decode replica has taken them (`release`)."""
        slot = self.owner.pop(seq.seq_id)
        slot.running.remove(seq)
        self.handing_off[seq.seq_id] = (slot, seq)

    def release(self, seq: Sequence) -> list[int]:
        """Free a detached request's blocks here; returns the cache slots its prompt's K/V occupied."""
        slot, _ = self.handing_off.pop(seq.seq_id)
        computed = seq.num_computed_tokens
        slots = slot.blocks.slots(seq, 0, computed)
        slot.blocks.free(seq)
        seq.num_computed_tokens = computed
        return slots

    def room_for(self, seq: Sequence) -> Scheduler | None:
        """The micro-batch slot that can take `seq` with its whole context now (blocks and a place in the
        batch, none of its own requests waiting), or None: a decode replica never over-commits its cache."""
        for slot in sorted(self.slots, key=lambda s: len(s.running) + len(s.waiting)):
            if slot.waiting:  # its preempted requests go first
                continue
            need = slot.blocks.blocks_for(len(seq)) + (slot.watermark if slot.running else 0)
            if len(slot.running) < slot.max_num_seqs and need <= slot.blocks.num_free:
                return slot
        return None

    def adopt(self, seq: Sequence, slot: Scheduler) -> list[int]:
        """Take a prefilled request into `slot` (room_for's answer); returns the cache slots its prompt's
        K/V go to. Its next step decodes."""
        computed = seq.num_computed_tokens
        slot.blocks.allocate(seq, len(seq))
        seq.status = SequenceStatus.RUNNING
        bisect.insort(slot.running, seq, key=lambda s: s.arrival)
        self.owner[seq.seq_id] = slot
        self.num_routed += 1
        return slot.blocks.slots(seq, 0, computed)

    def has_work(self) -> bool:
        return bool(self.in_flight) or any(s.has_work() for s in self.slots)

    def finish(self, seq: Sequence, reason: str) -> None:
        """End `seq` (stopped, done, aborted); a no-op when it has already ended."""
        if seq.seq_id in self.handing_off:
            self.release(seq)
            seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason
            return
        slot = self.owner.pop(seq.seq_id, None)
        if slot is None:
            return
        if seq in slot.running:
            slot.finish(seq, reason)
        else:
            slot.waiting.remove(seq)
            seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason

    # ------------------------------------------------------------------------------ steps

    def launch(self) -> None:
        """Send a batch from every idle slot that has work."""
        busy = {id(s) for s, _ in self.in_flight.values()}
        for slot in self.slots:
            if self.error or id(slot) in busy or not slot.has_work():
                continue
            batch = slot.schedule()
            if not batch.entries:
                continue
            self._submit(slot, batch)
        if self.transfers and not self.error:  # handoffs with no step to ride on go alone
            self._submit(self.slots[0], Batch([]))

    def _submit(self, slot: Scheduler, batch: Batch) -> None:
        step = build_step(next(self._step_ids), batch, slot.blocks)
        step.transfers, self.transfers = self.transfers, []
        self.in_flight[step.step_id] = (slot, batch)
        self.executor.submit(step)

    def collect(self) -> list[Completed]:
        """The batches whose results came back; marks the replica failed if its executor did."""
        done = [Completed(*self.in_flight.pop(step_id), results) for step_id, results in self.executor.poll()]
        if self.executor.error and not self.error:
            self.error = self.executor.error
        return done

    def fail(self) -> list[Sequence]:
        """Every unfinished sequence of a failed replica, ended with finish_reason "error"."""
        ended = self.evict()
        for seq in ended:
            seq.status, seq.finish_reason = SequenceStatus.FINISHED, "error"
        return ended

    def evict_lost_transfers(self) -> list[Sequence]:
        """The requests whose KV a worker could not receive (its sender died), taken off this replica as
        `evict` does: they must be computed again."""
        lost = getattr(self.executor, "failed_transfers", set())
        seqs = [seq for slot in self.slots for seq in slot.running if seq.seq_id in lost]
        lost.clear()
        for seq in seqs:
            self._reset(seq)
        return seqs

    def _reset(self, seq: Sequence) -> None:
        self.finish(seq, "evicted")
        seq.block_table.clear()
        seq.num_computed_tokens, seq.status, seq.finish_reason = 0, SequenceStatus.WAITING, None

    def evict(self) -> list[Sequence]:
        """Take every unfinished sequence off a failed replica, oldest first, as if never admitted: no
        blocks, nothing computed (its KV died with the replica), its tokens so far kept."""
        evicted = [seq for _, seq in self.handing_off.values()]
        for slot in self.slots:
            evicted += list(slot.running) + list(slot.waiting)
        for seq in evicted:
            self._reset(seq)
        self.in_flight.clear()
        return sorted(evicted, key=lambda s: s.arrival)

    # ------------------------------------------------------------------------------ state

    @property
    def num_blocks(self) -> int:
        return sum(s.blocks.num_blocks for s in self.slots)

    @property
    def num_free_blocks(self) -> int:
        return sum(s.blocks.num_free for s in self.slots)

    @property
    def num_waiting(self) -> int:
        return sum(len(s.waiting) for s in self.slots)

    @property
    def num_running(self) -> int:
        return sum(len(s.running) for s in self.slots)

    def stats(self) -> ReplicaStats:
        # Worker-side figures exist only for a plan's workers (PipelineExecutor).
        moved = list(getattr(self.executor, "kv_bytes", {}).values())
        seconds = sum(t[4] for t in getattr(self.executor, "timings", {}).values())
        return ReplicaStats(self.index, self.role, self.num_waiting + len(self.handing_off), self.num_running,
                            sum(m[0] for m in moved), sum(m[1] for m in moved), seconds, bool(self.error))

    @property
    def num_preemptions(self) -> int:
        return sum(s.num_preemptions for s in self.slots)
