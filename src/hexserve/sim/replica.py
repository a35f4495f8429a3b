"""One replica's engine: vLLM-style continuous batching over an asymmetric pipeline.

- Micro-batches: a replica of S stages runs S independent batch slots (vLLM's virtual engines under
  pipeline parallelism). Each slot keeps its own running sequences and has at most one batch in the
  pipeline; when its batch leaves the last stage it schedules the next. Up to S batches are therefore
  in flight, one per stage, and unequal stage times make the slowest stage the bottleneck.
- A step is a prefill or a decode step (vLLM's default scheduler, no chunked prefill), the model the
  planner prices: waiting prompts go first (FCFS, within the token budget, the slot's sequence cap and
  the free KV blocks minus a watermark); otherwise every running sequence of the slot decodes a token.
- KV blocks come from the cost model's KV pool. Before a decode step each sequence takes the blocks
  its context needs; when none are left the slot preempts its latest-admitted sequence (vLLM's
  recompute: blocks freed, back to the front of the queue, its prompt and output prefilled again).
- Stages are FIFO servers with deterministic times known when a batch is scheduled, and batches enter
  the pipeline in time order, so a batch's passage through every stage is computed at once: one event
  per batch, not one per stage.

Roles: a colocated replica prefills and decodes; a prefill replica hands each prefilled sequence to
`on_prefilled` (its KV stays here until `release`); a decode replica admits handed-over sequences when
it has blocks for their prompt, pulls their KV over a `SharedLink`, then decodes them. In a
disaggregated plan the first token reaches the user from the decode replica, with the KV (as behind
vLLM's disaggregated-prefill proxy): TTFT includes the transfer, TPOT does not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from hexserve.costmodel.memory import MAX_BATCH_TOKENS
from hexserve.sim.costs import ReplicaCosts
from hexserve.sim.events import EventLoop
from hexserve.sim.kv import BLOCK_TOKENS, BlockPool, blocks_for
from hexserve.sim.link import SharedLink
from hexserve.sim.sequence import Seq

WATERMARK = 0.01  # vLLM keeps 1% of the blocks free when admitting, so running sequences can grow


@dataclass
class Slot:
    running: list[Seq] = field(default_factory=list)
    busy: bool = False


@dataclass
class ReplicaStats:
    prefill_steps: int = 0
    decode_steps: int = 0
    preemptions: int = 0
    decode_batch_sum: int = 0  # for the mean decode batch


class ReplicaSim:
    def __init__(
        self,
        index: int,
        role: str,
        costs: ReplicaCosts,
        loop: EventLoop,
        max_seqs: int,
        on_finished: Callable[[Seq], None],
        on_prefilled: Callable[[ReplicaSim, Seq], None] | None = None,
    ):
        self.index, self.role, self.costs, self.loop = index, role, costs, loop
        self.max_seqs = max_seqs  # per slot: the plan's micro-batch
        self.on_finished, self.on_prefilled = on_finished, on_prefilled
        self.pool = BlockPool(costs.kv_tokens() // BLOCK_TOKENS)
        self.watermark = int(self.pool.capacity * WATERMARK)
        # Colocated and decode replicas: one batch slot per stage (a slot's next step needs its last one's
        # tokens). A prefill replica has no such dependency and feeds its pipeline instead (`_feed`).
        self.slots = [Slot() for _ in range(costs.num_stages)] if role != "prefill" else []
        self.feed_at = -1.0  # prefill role: when a pending `_feed` event fires (-1: none pending)
        self.stage_free = [0.0] * costs.num_stages
        self.stage_busy = [0.0] * costs.num_stages
        self.waiting: deque[Seq] = deque()  # to prefill: new requests, or preempted ones to recompute
        self.pulls: deque[tuple[Seq, ReplicaSim, SharedLink]] = deque()  # decode role: KV not yet here
        self.pulling = 0
        self.stats = ReplicaStats()

    # ------------------------------------------------------------------ load and capacity

    @property
    def outstanding(self) -> int:
        """Sequences here that are not finished: queued, pulling or running (the least-loaded router's measure)."""
        return len(self.waiting) + len(self.pulls) + self.pulling + sum(len(s.running) for s in self.slots)

    def holds(self, tokens: int) -> bool:
        return blocks_for(tokens) <= self.pool.capacity - self.watermark

    # ------------------------------------------------------------------ entry points

    def submit(self, seq: Seq) -> None:
        """A request to prefill here."""
        self.waiting.append(seq)
        self.kick()

    def pull(self, seq: Seq, source: ReplicaSim, link: SharedLink) -> None:
        """Decode role: a sequence prefilled on `source`, whose KV must come over `link`."""
        self.pulls.append((seq, source, link))
        self.kick()

    def release(self, seq: Seq) -> None:
        """Prefill role: the sequence's KV has been sent; its blocks here are free again."""
        self.pool.give(seq.held)
        seq.held = 0
        self.kick()

    def kick(self) -> None:
        """Start whatever can start: KV pulls, then a batch on every idle slot."""
        if self.role == "prefill":
            self._feed()
            return
        if self.pulls:
            self._admit_pulls()
        for slot in self.slots:
            if not slot.busy:
                self._schedule(slot)

    # ------------------------------------------------------------------ scheduling

    def _admit_pulls(self) -> None:
        cap = self.max_seqs * len(self.slots)
        while self.pulls and self.outstanding - len(self.pulls) - len(self.waiting) < cap:
            seq, source, link = self.pulls[0]
            need = blocks_for(seq.prompt + 1)
            if not self.pool.can(need + self.watermark):
                return
            self.pulls.popleft()
            self.pool.take(need)
            seq.held, seq.blocks = seq.blocks, need
            self.pulling += 1
            link.start(seq.id, seq.prompt, lambda s=seq, src=source: self._pulled(s, src))

    def _pulled(self, seq: Seq, source: ReplicaSim) -> None:
        self.pulling -= 1
        source.release(seq)
        if seq.first_token != seq.first_token:  # NaN: the first token leaves with the KV, from here
            seq.first_token = self.loop.now
        min(self.slots, key=lambda s: len(s.running)).running.append(seq)
        self.kick()

    def _feed(self) -> None:
        """Prefill role: prompts do not depend on each other's output, so the next micro-batch enters the
        first stage as soon as that stage is free (FCFS, within the token budget, the plan's micro-batch
        and the free KV blocks, which hold each prompt's KV until it is sent). Stages downstream are FIFO
        queues, so the busiest stage never waits for work while prompts are queued: HexGen-2's and
        DistServe's prefill instances, and the planner's prefill model (b / max_j T_j)."""
        now = self.loop.now
        if not self.waiting or self.feed_at >= now:
            return
        if self.stage_free[0] > now:  # the first stage is busy: come back when it frees
            self.feed_at = self.stage_free[0]
            self.loop.at(self.feed_at, self._fed)
        elif self._start_prefill(Slot()) and self.waiting:
            self._feed()

    def _fed(self) -> None:
        self.feed_at = -1.0
        self._feed()

    def _schedule(self, slot: Slot) -> None:
        if self._start_prefill(slot) or not slot.running or self.role == "prefill":
            return
        batch = self._decode_batch(slot)
        if batch:
            context = sum(s.context for s in batch) / len(batch)
            self.stats.decode_steps += 1
            self.stats.decode_batch_sum += len(batch)
            self._launch(slot, batch, self.costs.decode(len(batch), context), self._decoded)
        else:  # every sequence of the slot was preempted: their blocks are free, recompute now
            self._start_prefill(slot)

    def _start_prefill(self, slot: Slot) -> bool:
        batch = self._prefill_batch(slot)
        if not batch:
            return False
        mean = -(-sum(s.context for s in batch) // len(batch))
        self.stats.prefill_steps += 1
        self._launch(slot, batch, self.costs.prefill(len(batch), mean), self._prefilled)
        return True

    def _prefill_batch(self, slot: Slot) -> list[Seq]:
        """FCFS prompts within the token budget, the slot's sequence cap and the free blocks."""
        batch: list[Seq] = []
        tokens, room = 0, self.max_seqs - len(slot.running)
        waiting, pool = self.waiting, self.pool
        while waiting and len(batch) < room:
            seq = waiting[0]
            n = seq.context
            if batch and tokens + n > MAX_BATCH_TOKENS:
                break
            need = blocks_for(n)
            if not pool.can(need + self.watermark):
                break
            waiting.popleft()
            pool.take(need)
            seq.blocks = need
            tokens += n
            batch.append(seq)
        return batch

    def _decode_batch(self, slot: Slot) -> list[Seq]:
        """The slot's running sequences, each with the blocks its next token needs; preempt the latest
        admitted ones while blocks run short."""
        running, pool = slot.running, self.pool
        i = 0
        while i < len(running):
            seq = running[i]
            need = blocks_for(seq.context) - seq.blocks
            if need > 0:
                while not pool.can(need) and len(running) - 1 > i:
                    self._preempt(running.pop())
                if not pool.can(need):
                    self._preempt(running.pop())
                    continue
                pool.take(need)
                seq.blocks += need
            i += 1
        return list(running)

    def _preempt(self, seq: Seq) -> None:
        self.pool.give(seq.blocks)
        seq.blocks = 0
        seq.preemptions += 1
        self.stats.preemptions += 1
        self.waiting.appendleft(seq)

    def _launch(self, slot: Slot, batch: list[Seq], times: tuple[float, ...], done: Callable) -> None:
        """Pass the batch through every stage in turn (each a FIFO server), then call `done`."""
        t = self.loop.now
        free, busy = self.stage_free, self.stage_busy
        for j, d in enumerate(times):
            t = (t if t > free[j] else free[j]) + d
            free[j] = t
            busy[j] += d
        slot.busy = True
        self.loop.at(t, done, slot, batch)

    # ------------------------------------------------------------------ completions

    def _prefilled(self, slot: Slot, batch: list[Seq]) -> None:
        now = self.loop.now
        for seq in batch:
            seq.generated += 1
            if seq.entry < 0:  # the first prefill, not a recompute
                seq.entry = self.index
                if self.role != "prefill" or seq.done:  # disaggregated: the decode side emits it
                    seq.first_token = now
            if seq.done:
                self._finish(seq)
            elif self.role == "prefill":
                self.on_prefilled(self, seq)
            else:
                slot.running.append(seq)
        slot.busy = False
        self.kick()

    def _decoded(self, slot: Slot, batch: list[Seq]) -> None:
        finished = False
        for seq in batch:
            seq.generated += 1
            if seq.generated >= seq.output:
                finished = True
                self._finish(seq)
        if finished:
            slot.running = [s for s in slot.running if s.generated < s.output]
        slot.busy = False
        self.kick()

    def _finish(self, seq: Seq) -> None:
        seq.finish = self.loop.now
        self.pool.give(seq.blocks)
        seq.blocks = 0
        if self.role == "decode":
            seq.decoder = self.index
        self.on_finished(seq)
