"""Where the engine runs and in which dtype, how much memory its KV cache may take, and where it caches
files (converted checkpoints, compiled kernels)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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
    """'auto': float32 on a CPU, whatever the CPU; on a GPU the checkpoint's dtype, or bfloat16 for a
    float32 checkpoint.

    Why float32 on every CPU: a timing or a CPU flag would give hosts different numerics, and bfloat16
    answers differ between hosts (AMX and AVX-512 kernels round differently) and from float32 on
    near-tie tokens; float32 gives the same greedy tokens as transformers everywhere. bfloat16 stays one
    flag away (`--dtype bfloat16`), worth it on CPUs with avx512_bf16 or amx_bf16 (docs/engine.md, "Dtype")."""
    if name != "auto":
        if name not in DTYPES:
            raise SpecError(f"dtype: {name!r} is not supported; use auto or one of {', '.join(DTYPES)}")
        return DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    return DTYPES.get(checkpoint_dtype, torch.bfloat16) if checkpoint_dtype != "float32" else torch.bfloat16


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def set_threads(threads: int) -> None:
    """torch's intra-op threads for this process. More threads than free cores is oversubscription: every
    parallel region then waits for its slowest, descheduled thread (docs/engine.md, "Threads")."""
    if threads < 1:
        raise SpecError(f"threads: {threads} must be >= 1; give the cores this process may use")
    torch.set_num_threads(threads)


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
