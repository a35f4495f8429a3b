"""Linear layers that load themselves from a checkpoint, whole or as one tensor-parallel rank's part.

`Linear` is column-parallel (a rank keeps rows of the weight: its output features), `RowLinear` is
row-parallel (a rank keeps columns: its input features) and sums the ranks' partial outputs with one
all-reduce; `MergedLinear` stacks several column-parallel projections (q|k|v, gate|up). Each reads only
its piece of the safetensors slice (`read_shard`), so a worker never reads the whole tensor. With the
default `WHOLE` shard a layer keeps everything (the single-process engine).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hexserve.runtime.parallel import WHOLE, Shard

# Below this many rows a float32 CPU matmul runs faster as W @ xᵀ than as x @ Wᵀ (measured on this machine's
# MKL, SmolLM2 shapes, 2 threads: 2 rows 58 -> 16 ms, 32 rows 90 -> 68 ms for all layers; one row goes to a
# gemv that is 2.5x slower than a 2-row gemm, so it is padded to two). From 64 rows on x @ Wᵀ wins.
# bfloat16 goes through oneDNN, where F.linear is as fast or faster at every size (docs/engine.md).
SMALL_BATCH_ROWS = 64


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, with decode-sized float32 CPU batches computed as (W @ xᵀ)ᵀ (same result up to rounding)."""
    rows = x.shape[0] if x.dim() == 2 else SMALL_BATCH_ROWS
    if rows >= SMALL_BATCH_ROWS or x.device.type != "cpu" or x.dtype != torch.float32:
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
    """y = x Wᵀ + b with W of shape (out_features, in_features), as Hugging Face stores it; under TP a
    rank keeps out_features / tp rows (column-parallel). Give `shard=WHOLE` to replicate it."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, shard: Shard = WHOLE):
        super().__init__()
        self.shard = shard
        self.in_features, self.out_features = in_features, out_features
        rows, cols = self.local_shape(in_features, out_features)
        self.weight = nn.Parameter(torch.empty(rows, cols), requires_grad=False)
        self.weight.weight_loader = self.load
        if bias:
            self.bias = nn.Parameter(torch.empty(rows), requires_grad=False)
            self.bias.weight_loader = self.load
        else:
            self.register_parameter("bias", None)

    def local_shape(self, in_features: int, out_features: int) -> tuple[int, int]:
        return self.shard.part(out_features), in_features

    def load(self, param: nn.Parameter, src, shard_id: str | None = None) -> None:
        param.data.copy_(read_shard(src, 0, self.shard.tp_rank, self.shard.tp_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


class MergedLinear(Linear):
    """Several projections of the same input in one matrix product (q|k|v, gate|up): fewer, larger
    matmuls. Each checkpoint tensor lands in its own row range, named by `shard_id`. `pieces` names the
    (index, count) piece a part keeps under TP when it is not (tp_rank, tp_size): replicated KV heads."""

    def __init__(self, in_features: int, parts: dict[str, int], bias: bool = False, shard: Shard = WHOLE,
                 pieces: dict[str, tuple[int, int]] | None = None):
        pieces = {name: (pieces or {}).get(name, (shard.tp_rank, shard.tp_size)) for name in parts}
        local = {name: size // pieces[name][1] for name, size in parts.items()}
        super().__init__(in_features, sum(local.values()), bias, shard)
        self.pieces, self.parts = pieces, local
        self.offsets, offset = {}, 0
        for name, size in self.parts.items():
            self.offsets[name] = offset
            offset += size

    def local_shape(self, in_features: int, out_features: int) -> tuple[int, int]:
        return out_features, in_features  # out_features is already the sum of the local parts

    def load(self, param: nn.Parameter, src, shard_id: str | None = None) -> None:
        assert shard_id in self.parts, f"unknown part {shard_id!r} of a merged linear"
        rows = param.data.narrow(0, self.offsets[shard_id], self.parts[shard_id])
        rows.copy_(read_shard(src, 0, *self.pieces[shard_id]))

    def split(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return y.split(list(self.parts.values()), dim=-1)


class RowLinear(Linear):
    """A projection back to the hidden size (o_proj, down_proj, fc2): under TP a rank keeps
    in_features / tp columns, and the partial outputs are summed by one all-reduce. The bias is added
    once, by rank 0, before the sum."""

    def local_shape(self, in_features: int, out_features: int) -> tuple[int, int]:
        return out_features, self.shard.part(in_features)

    def load(self, param: nn.Parameter, src, shard_id: str | None = None) -> None:
        if param.ndim == 1:
            param.data.copy_(src[:])
        else:
            param.data.copy_(read_shard(src, 1, self.shard.tp_rank, self.shard.tp_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias if self.shard.tp_rank == 0 else None
        return self.shard.all_reduce(linear(x, self.weight, bias))
