"""A replica's KV cache as fixed-size blocks (vLLM's paged attention): the scheduler's memory limit.

The pool's size comes from the cost model's memory model: the smallest KV pool of any rank of the
replica, in tokens, divided into blocks. Every rank holds the KV of its layers for every sequence of
the replica, so the tightest rank bounds them all.
"""

from __future__ import annotations

from dataclasses import dataclass

BLOCK_TOKENS = 16  # vLLM's default block size


def blocks_for(tokens: int) -> int:
    return -(-tokens // BLOCK_TOKENS)


@dataclass
class BlockPool:
    capacity: int
    used: int = 0
    peak: int = 0  # the most ever held at once: tests check it never exceeds capacity

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def can(self, n: int) -> bool:
        return n <= self.capacity - self.used

    def take(self, n: int) -> None:
        if n > self.capacity - self.used:
            raise RuntimeError(f"KV pool overcommitted: {self.used} + {n} > {self.capacity} blocks")
        self.used += n
        if self.used > self.peak:
            self.peak = self.used

    def give(self, n: int) -> None:
        if n > self.used:
            raise RuntimeError(f"KV pool freed {n} blocks but holds {self.used}")
        self.used -= n
