"""Where the engine runs and in which dtype, and how much memory its KV cache may take."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hexserve.errors import SpecError

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}
CPU_KV_CACHE_BYTES = 2 * 2**30
GPU_KV_CACHE_FRACTION = 0.8  # of the memory still free once the weights are loaded


def pick_device(name: str | None = None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise SpecError(f"device: {name!r} is not a torch device; use cpu, cuda or cuda:N") from None


def pick_dtype(name: str, checkpoint_dtype: str, device: torch.device) -> torch.dtype:
    """'auto': float32 on CPU, where bf16 matmuls run at about half the fp32 rate unless the CPU has
    AMX (docs/engine.md); on a GPU the checkpoint's dtype, or bfloat16 for a float32 checkpoint."""
    if name != "auto":
        if name not in DTYPES:
            raise SpecError(f"dtype: {name!r} is not supported; use auto or one of {', '.join(DTYPES)}")
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    return DTYPES.get(checkpoint_dtype, torch.bfloat16) if checkpoint_dtype != "float32" else torch.bfloat16


def kv_cache_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_KV_CACHE_FRACTION)
    return CPU_KV_CACHE_BYTES


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Build modules directly in the compute dtype (no float32 copy first)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
