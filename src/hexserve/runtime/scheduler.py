"""Continuous batching: each step, one token for every running sequence, then prompt spans (new or
continuing) under a token budget and the free blocks.

No request starves: admission is first come first served (the head of the queue is never skipped),
and when blocks run out the newest running sequence is preempted (its blocks freed, its tokens kept
for recomputation), so the oldest one always advances. Preempted sequences rejoin the queue in
arrival order, ahead of everything never admitted.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

from hexserve.runtime.kv_cache import BlockManager
from hexserve.runtime.sequence import Sequence, SequenceStatus

DEFAULT_MAX_NUM_SEQS = 64  # sequences batched at once when neither the user nor a plan says


@dataclass
class Scheduled:
    seq: Sequence
    num_tokens: int  # positions [seq.num_computed_tokens, + num_tokens) are computed this step

    @property
    def is_decode(self) -> bool:
        """One token whose context is all in the cache: it joins the batched decode attention."""
        return self.num_tokens == 1 and self.seq.num_computed_tokens > 0

    @property
    def samples(self) -> bool:
        """Whether this step reaches the sequence's last token, so its logits pick the next one."""
        return self.seq.num_computed_tokens + self.num_tokens == len(self.seq)


@dataclass
class Batch:
    entries: list[Scheduled]  # single-token steps first, then prompt spans

    @property
    def num_tokens(self) -> int:
        return sum(e.num_tokens for e in self.entries)


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        assert max_num_batched_tokens >= max_num_seqs, "every running sequence needs a token each step"
        self.blocks = blocks
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        # Keep a few blocks free at admission so running sequences can grow without preempting at once.
        self.watermark = max(1, blocks.num_blocks // 100)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # oldest first
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> Batch:
        budget = self.max_num_batched_tokens
        decodes: list[Scheduled] = []
        for seq in list(self.running):
            if seq.status is SequenceStatus.RUNNING and not seq.prefilling and self._reserve(seq, len(seq)):
                decodes.append(Scheduled(seq, 1))
        budget -= len(decodes)
        spans: list[Scheduled] = []
        for seq in self.running:  # prompts admitted earlier and not yet fully computed
            if seq.prefilling and budget > 0:
                n = min(len(seq) - seq.num_computed_tokens, budget)
                spans.append(Scheduled(seq, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and self._admit(self.waiting[0]):
            seq = self.waiting.popleft()
            n = min(len(seq), budget)
            spans.append(Scheduled(seq, n))
            budget -= n
        return Batch(decodes + spans)

    def _admit(self, seq: Sequence) -> bool:
        need = self.blocks.blocks_for(len(seq))
        reserve = self.watermark if self.running else 0
        if need + reserve > self.blocks.num_free:
            return False
        self.blocks.allocate(seq, len(seq))
        seq.status = SequenceStatus.RUNNING
        bisect.insort(self.running, seq, key=lambda s: s.arrival)
        return True

    def _reserve(self, seq: Sequence, num_tokens: int) -> bool:
        """Blocks for `num_tokens` tokens of `seq`, preempting the newest sequences as needed; False if
        `seq` itself had to go."""
        while not self.blocks.can_allocate(seq, num_tokens):
            victim = self.running[-1]
            self.preempt(victim)
            if victim is seq:
                return False
        self.blocks.allocate(seq, num_tokens)
        return True

    def preempt(self, seq: Sequence) -> None:
        self.num_preemptions += 1
        self.running.remove(seq)
        self.blocks.free(seq)
        seq.status = SequenceStatus.WAITING
        index = bisect.bisect([s.arrival for s in self.waiting], seq.arrival)
        self.waiting.insert(index, seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        seq.status, seq.finish_reason = SequenceStatus.FINISHED, reason
        self.running.remove(seq)
        self.blocks.free(seq)
