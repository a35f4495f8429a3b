"""Linear layers that load themselves from a checkpoint.

Each layer reads its weights through `shard(tensor_slice, dim)`, the one hook a tensor-parallel rewrite
overrides (gpt-fast's tp.py style): a column-parallel rank keeps rows of the weight (dim 0), a
row-parallel rank keeps columns (dim 1). Here, in one process, a layer keeps the whole tensor; the
checkpoint is read through safetensors slices, so a rank that overrides `shard` reads only its part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Below this many rows a CPU matmul runs faster as W @ xᵀ than as x @ Wᵀ (measured on this machine's MKL,
# SmolLM2 shapes, 2 threads: 2 rows 58 -> 16 ms, 32 rows 90 -> 68 ms for all layers; one row goes to a
# gemv that is 2.5x slower than a 2-row gemm, so it is padded to two). From 64 rows on x @ Wᵀ wins.
SMALL_BATCH_ROWS = 64


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with decode-sized CPU batches computed as (W @ xᵀ)ᵀ (same result up to rounding)."""
    rows = x.shape[0] if x.dim() == 2 else SMALL_BATCH_ROWS
    if rows >= SMALL_BATCH_ROWS or x.device.type != "cpu":
        return F.linear(x, weight, bias)
    padded = torch.cat([x, x.new_zeros(1, x.shape[1])]) if rows == 1 else x
    y = torch.mm(weight, padded.t())[:, :rows].t().contiguous()
    return y if bias is None else y.add_(bias)


def read_shard(src, dim: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """The `rank`-th of `world` equal pieces of a safetensors slice (or tensor) along `dim`."""
    if world == 1:
        return src[:]
    size = src.get_shape()[dim] if hasattr(src, "get_shape") else src.shape[dim]
    step = size // world
    index = [slice(None)] * (dim + 1)
    index[dim] = slice(rank * step, (rank + 1) * step)
    return src[tuple(index)]


class Linear(nn.Module):
    """y = x Wᵀ + b with W of shape (out_features, in_features), as Hugging Face stores it."""

    # Along which dim of the weight a tensor-parallel version splits (0: column-, 1: row-parallel).
    tp_dim = 0

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.weight.weight_loader = self.load
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False)
            self.bias.weight_loader = self.load
        else:
            self.register_parameter("bias", None)

    def shard(self, src, dim: int) -> torch.Tensor:
        """The part of checkpoint tensor `src` this layer holds: all of it in one process."""
        return read_shard(src, dim)

    def load(self, param: nn.Parameter, src, shard_id: str | None = None) -> None:
        # A bias is split like the weight's output dim; a row-parallel bias is whole on every rank.
        dim = self.tp_dim if param.ndim == 2 or self.tp_dim == 0 else None
        param.data.copy_(self.shard(src, dim) if dim is not None else src[:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class MergedLinear(Linear):
    """Several projections of the same input in one matrix product (q|k|v, gate|up): fewer, larger
    matmuls. Each checkpoint tensor lands in its own row range, named by `shard_id`."""

    def __init__(self, in_features: int, parts: dict[str, int], bias: bool = False):
        super().__init__(in_features, sum(parts.values()), bias)
        self.parts = parts
        self.offsets, offset = {}, 0
        for name, size in parts.items():
            self.offsets[name] = offset
            offset += size

    def load(self, param: nn.Parameter, src, shard_id: str | None = None) -> None:
        assert shard_id in self.parts, f"unknown part {shard_id!r} of a merged linear"
        rows = param.data.narrow(0, self.offsets[shard_id], self.parts[shard_id])
        rows.copy_(self.shard(src, 0))

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return y.split(list(self.parts.values()), dim=-1)


class RowLinear(Linear):
    """A projection back to the hidden size (o_proj, down_proj, fc2): row-parallel under TP, where the
    rewrite adds one all-reduce after it."""

    tp_dim = 1
