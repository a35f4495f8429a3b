"""RMSNorm (Llama family) and LayerNorm (OPT)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _load_whole(param: nn.Parameter, src, shard_id: str | None = None) -> None:
    # Norms are replicated on every tensor-parallel rank: always the whole tensor.
    param.data.copy_(src[:])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False)
        self.weight.weight_loader = _load_whole

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Statistics in float32 whatever the compute dtype, as the reference implementation does.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


class LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float, affine: bool = True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.empty(dim), requires_grad=False) if affine else None
        self.bias = nn.Parameter(torch.empty(dim), requires_grad=False) if affine else None
        for p in (self.weight, self.bias):
            if p is not None:
                p.weight_loader = _load_whole

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)
