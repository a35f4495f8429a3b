"""The paged KV cache: fixed-size blocks of token slots, a free list, and a block table per sequence.

A sequence's token at position p lives in slot `block_table[p // block_size] * block_size + p % block_size`
of every layer's cache; blocks return to the free list when the sequence finishes or is preempted.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from hexserve.runtime.sequence import Sequence


class BlockManager:
    """Blocks [first, first + num_blocks) of the cache: a replica with several micro-batches in flight
    gives each its own range, so a block freed by one is never reused while another step may write it."""

    def __init__(self, num_blocks: int, block_size: int, first: int = 0):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.free_blocks: deque[int] = deque(range(first, first + num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free_blocks)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def can_allocate(self, seq: Sequence, num_tokens: int) -> bool:
        """Whether `seq` can hold `num_tokens` tokens (counting the blocks it already has)."""
        return self.blocks_for(num_tokens) - len(seq.block_table) <= self.num_free

    def allocate(self, seq: Sequence, num_tokens: int) -> None:
        need = self.blocks_for(num_tokens) - len(seq.block_table)
        assert need <= self.num_free, "allocate() without can_allocate()"
        seq.block_table.extend(self.free_blocks.popleft() for _ in range(need))

    def free(self, seq: Sequence) -> None:
        # Most recently freed first: their memory is the likeliest still in cache.
        self.free_blocks.extendleft(reversed(seq.block_table))
        seq.block_table.clear()
        seq.num_computed_tokens = 0

    def slots(self, seq: Sequence, start: int, end: int) -> list[int]:
        """Cache slots of positions [start, end) of `seq`."""
        bs, table = self.block_size, seq.block_table
        return [table[p // bs] * bs + p % bs for p in range(start, end)]


@dataclass(frozen=True)
class CacheShape:
    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    dtype: torch.dtype

    @property
    def block_bytes(self) -> int:
        """Keys and values of one block over all layers."""
        itemsize = torch.empty(0, dtype=self.dtype).element_size()
        return 2 * self.num_layers * self.block_size * self.num_kv_heads * self.head_dim * itemsize

    def blocks_in(self, memory_bytes: int) -> int:
        return memory_bytes // self.block_bytes


def allocate_cache(shape: CacheShape, num_blocks: int, device: torch.device) -> torch.Tensor:
    """One tensor (2, layers, slots, kv_heads, head_dim); each attention layer gets views of its part."""
    slots = num_blocks * shape.block_size
    return torch.zeros(2, shape.num_layers, slots, shape.num_kv_heads, shape.head_dim, dtype=shape.dtype, device=device)
