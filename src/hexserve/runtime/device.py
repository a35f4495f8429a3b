"""Where the engine runs and in which dtype, how much memory its KV cache may take, and where it caches
files (converted checkpoints, compiled kernels)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

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
    """'auto': on a CPU whichever of bfloat16 and float32 it multiplies faster (fastest_cpu_dtype); on a
    GPU the checkpoint's dtype, or bfloat16 for a float32 checkpoint."""
    if name != "auto":
        if name not in DTYPES:
            raise SpecError(f"dtype: {name!r} is not supported; use auto or one of {', '.join(DTYPES)}")
        return DTYPES[name]
    if device.type == "cpu":
        return fastest_cpu_dtype()
    return DTYPES.get(checkpoint_dtype, torch.bfloat16) if checkpoint_dtype != "float32" else torch.bfloat16


@cache
def fastest_cpu_dtype() -> torch.dtype:
    """bfloat16 where this CPU runs a layer-sized matrix product in it clearly faster than in float32, else
    float32; timed once per process (~75 ms). Hosts differ: one measured here multiplies bf16 at 2.4x the
    float32 rate (avx512_bf16 through oneDNN), another at half of it (docs/engine.md)."""

    def seconds(dtype: torch.dtype) -> float:
        weight = torch.randn(3072, 576, dtype=dtype)
        prompt, decode = torch.randn(256, 576, dtype=dtype), torch.randn(8, 576, dtype=dtype)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            prompt @ weight.T
            decode @ weight.T
            best = min(best, time.perf_counter() - start)
        return best

    return torch.bfloat16 if seconds(torch.bfloat16) < 0.8 * seconds(torch.float32) else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16: the spelling --dtype takes."""
    return str(dtype).removeprefix("torch.")


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


def cache_root() -> Path:
    """$HEXSERVE_CACHE, or ~/.cache/hexserve."""
    return Path(os.environ.get("HEXSERVE_CACHE") or Path.home() / ".cache" / "hexserve")
