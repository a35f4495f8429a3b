"""Token embedding and LM head (which may share the embedding's weight), vocabulary-parallel under TP.

A TP rank keeps a contiguous range of ceil(vocab / tp) rows (the last rank's range is padded with zero
rows). The embedding looks up the ids in its range, zeroes the others and all-reduces; the LM head
computes its range's logits and gathers them on the stage's rank 0, which samples.
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from hexserve.runtime.layers.linear import linear
from hexserve.runtime.parallel import COMM_SECONDS, WHOLE, Shard


class Embedding(nn.Module):
    def __init__(self, num_embeddings: int, dim: int, shard: Shard = WHOLE):
        super().__init__()
        self.shard, self.num_embeddings = shard, num_embeddings
        self.start, rows = shard.vocab_range(num_embeddings)
        self.weight = nn.Parameter(torch.empty(rows, dim), requires_grad=False)
        self.weight.weight_loader = self.load

    def load(self, param: nn.Parameter, src, shard_id: str | None = None) -> None:
        end = min(self.start + param.shape[0], self.num_embeddings)
        param.data[: end - self.start].copy_(src[self.start : end] if self.shard.tp_size > 1 else src[:])
        param.data[end - self.start :].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.shard.tp_size == 1:
            return F.embedding(ids, self.weight)
        local = ids - self.start
        outside = (local < 0) | (local >= self.weight.shape[0])
        x = F.embedding(local.masked_fill(outside, 0), self.weight)
        return self.shard.all_reduce(x.masked_fill_(outside.unsqueeze(-1), 0.0))


class LMHead(Embedding):
    """Hidden states to vocabulary logits; `tie(embedding)` shares the embedding's weight. Under TP only
    the stage's rank 0 gets the logits (the others get None)."""

    def tie(self, embedding: Embedding) -> None:
        self.weight = embedding.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor | None:
        logits = linear(hidden, self.weight)
        if self.shard.tp_size == 1:
            return logits
        rank0 = self.shard.tp_rank == 0
        pieces = [torch.empty_like(logits) for _ in range(self.shard.tp_size)] if rank0 else None
        start = time.perf_counter()
        dist.gather(logits.contiguous(), pieces, dst=self.shard.leader, group=self.shard.group)
        COMM_SECONDS[0] += time.perf_counter() - start
        return torch.cat(pieces, dim=-1)[:, : self.num_embeddings] if rank0 else None
