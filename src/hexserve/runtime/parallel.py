"""Which part of the model one worker holds: a pipeline stage's layer range and a tensor-parallel rank.

The single-process engine holds everything (`WHOLE`). A worker of a plan holds layers [first, end) of
the model, 1/tp of each layer's heads and MLP columns, and the embedding or the LM head only when its
stage is the first or the last. Layers read their slices through `piece` and `kv_piece`, and reduce
through `all_reduce` over the stage's TP group.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Shard:
    tp_rank: int = 0
    tp_size: int = 1
    layers: tuple[int, int] | None = None  # [first, end); None: all of them
    is_first: bool = True  # holds the embedding
    is_last: bool = True  # holds the final norm and the LM head
    group: object = None  # the stage's torch.distributed TP group (None when tp_size is 1)
    leader: int = 0  # global rank of the stage's TP rank 0 (where gathered logits land)

    @property
    def is_whole(self) -> bool:
        return self.tp_size == 1 and self.layers is None

    def layer_range(self, num_layers: int) -> range:
        return range(*self.layers) if self.layers else range(num_layers)

    def part(self, size: int) -> int:
        """This rank's share of a dimension split evenly across the TP group."""
        return size // self.tp_size

    def kv_piece(self, num_kv_heads: int) -> tuple[int, int]:
        """(index, count): which of `count` equal pieces of the KV heads this rank keeps. With TP wider
        than the KV heads each head is replicated on tp / kv_heads consecutive ranks (as vLLM does)."""
        if self.tp_size <= num_kv_heads:
            return self.tp_rank, self.tp_size
        return self.tp_rank // (self.tp_size // num_kv_heads), num_kv_heads

    def vocab_range(self, vocab: int) -> tuple[int, int]:
        """[start, start + per) of the vocabulary this rank's embedding rows cover (the last may pad)."""
        per = -(-vocab // self.tp_size)
        return self.tp_rank * per, per

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """The sum of every rank's `x`. Half-precision partials are summed in float32 and rounded once, as
        the single-process matmul rounds its float32 accumulator once: a bfloat16 sum would round after
        every rank's term, and near-tie tokens then differ from the single-process engine's."""
        if self.tp_size == 1:
            return x
        start = time.perf_counter()
        wide = x.float() if x.element_size() < 4 else x
        dist.all_reduce(wide, group=self.group)
        COMM_SECONDS[0] += time.perf_counter() - start
        return wide if wide is x else x.copy_(wide)


WHOLE = Shard()
# Seconds this process spent in TP collectives (waiting for slower peers included): the workers report
# per-step deltas, which benchmarks/pipeline.py splits from compute.
COMM_SECONDS = [0.0]
