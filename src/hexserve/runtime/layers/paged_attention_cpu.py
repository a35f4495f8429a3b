"""The CPU decode-attention kernel (paged_attention_cpu.c): compiled once per CPU with the system C
compiler, cached, loaded with ctypes.

Why a kernel: in PyTorch a decode must first gather its context's blocks into a padded copy, then run
SDPA over that strided copy; at the 8,192-token setting this was most of a decode step (docs/engine.md).
The kernel reads each cached key and value once, in place. Without a C compiler (or with
HEXSERVE_CPU_KERNELS=0) the engine keeps the gather + SDPA path, which gives the same results.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import warnings
from functools import cache
from pathlib import Path

import torch

from hexserve.runtime.device import cache_root

SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
ENTRIES = {torch.float32: "paged_decode_attention_f32", torch.bfloat16: "paged_decode_attention_bf16"}
LANES = 16  # the kernel handles head vectors 16 floats at a time
_I64 = ctypes.c_int64


def available(cache: torch.Tensor) -> bool:
    """Whether decodes over this (slots, kv_heads, head_dim) cache can use the kernel."""
    return (
        cache.device.type == "cpu" and cache.dtype in ENTRIES and cache.shape[-1] % LANES == 0
        and _library() is not None
    )


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, blocks: torch.Tensor, lengths: torch.Tensor,
    block_size: int,
) -> torch.Tensor:
    """q: (n, heads, d); caches: (slots, kv_heads, d); blocks: (n, width); lengths: (n,) -> (n, heads, d)."""
    q = q.contiguous()
    n, heads, d = q.shape
    out = torch.empty_like(q)
    kernel = getattr(_library(), ENTRIES[q.dtype])
    status = kernel(
        _ptr(q), _ptr(k_cache), _ptr(v_cache), _ptr(blocks), _ptr(lengths), _ptr(out),
        n, blocks.shape[1], heads, k_cache.shape[1], d, block_size, ctypes.c_float(d**-0.5),
        torch.get_num_threads(),
    )
    if status != 0:
        raise MemoryError("paged_decode_attention: out of memory for attention scores")
    return out


def _ptr(t: torch.Tensor) -> ctypes.c_void_p:
    assert t.is_contiguous(), "the kernel reads raw memory"
    return ctypes.c_void_p(t.data_ptr())


@cache
def _library() -> ctypes.CDLL | None:
    if os.environ.get("HEXSERVE_CPU_KERNELS", "1") == "0":
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.CalledProcessError) as e:
        warnings.warn(f"CPU attention kernel unavailable ({e}); decodes use gather + SDPA", stacklevel=2)
        return None
    for name in ENTRIES.values():
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_void_p] * 6 + [_I64] * 6 + [ctypes.c_float, ctypes.c_int]
    return lib


def _cpu_flags() -> str:
    """The CPU's feature flags (/proc/cpuinfo's "flags" on x86 Linux, "Features" on ARM), else what
    `platform` knows of the processor."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, sep, value = line.partition(":")
            if sep and name.strip() in ("flags", "Features"):
                return " ".join(sorted(value.split()))
    except OSError:
        pass
    return f"{platform.processor()} {platform.machine()}"


def _cache_key() -> str:
    """Source, compiler flags and the CPU's feature flags: -march=native compiles for this CPU's instructions,
    so a cache shared between hosts (a network home folder) must never hand one host a binary built for
    another (an illegal instruction at the first decode)."""
    parts = (SOURCE.read_bytes(), " ".join(FLAGS).encode(), platform.machine().encode(), _cpu_flags().encode())
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _build() -> Path:
    """The compiled library, keyed by `_cache_key`; written to a scratch name and renamed into place so
    worker processes compiling at once never load a half-written file."""
    target = cache_root() / "kernels" / f"paged_attention_cpu-{_cache_key()}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            cc = os.environ.get("CC", "cc")
            subprocess.run([cc, *FLAGS, str(SOURCE), "-o", str(built), "-lm"], check=True, capture_output=True)
            built.replace(target)
    return target
