"""Token embedding and LM head (which may share the embedding's weight)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hexserve.runtime.layers.linear import linear, read_shard


class Embedding(nn.Module):
    """A lookup table; under TP each rank would hold a vocabulary range (`shard` along dim 0)."""

    def __init__(self, num_embeddings: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, dim), requires_grad=False)
        self.weight.weight_loader = self.load

    def shard(self, src, dim: int) -> torch.Tensor:
        return read_shard(src, dim)

    def load(self, param: nn.Parameter, src, shard_id: str | None = None) -> None:
        param.data.copy_(self.shard(src, 0))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class LMHead(Embedding):
    """Hidden states to vocabulary logits; `tie(embedding)` shares the embedding's weight."""

    def tie(self, embedding: Embedding) -> None:
        self.weight = embedding.weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return linear(hidden, self.weight)
