"""The CPU decode-attention kernel against the gather + scaled_dot_product_attention path it replaces."""

import platform
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hexserve.runtime.layers import paged_attention_cpu
from hexserve.runtime.layers.paged_attention_cpu import available, paged_decode_attention

needs_kernel = pytest.mark.skipif(not available(torch.empty(1, 1, 16)), reason="no C compiler for the CPU kernel")


def reference(q, k_cache, v_cache, blocks, lengths, block_size):
    """Gather each row's blocks, mask past its length, SDPA in float32."""
    n, heads, d = q.shape
    kv_heads = k_cache.shape[1]
    keys, values = (c.view(-1, block_size, kv_heads, d)[blocks].flatten(1, 2).transpose(1, 2).float()
                    for c in (k_cache, v_cache))
    keys, values = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (keys, values))
    mask = torch.arange(keys.shape[2]) < lengths[:, None]
    out = F.scaled_dot_product_attention(q.float().unsqueeze(2), keys, values, attn_mask=mask[:, None, None, :])
    return out[:, :, 0]


@needs_kernel
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-6), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("n, heads, kv_heads, d", [(1, 9, 3, 64), (3, 4, 4, 16), (12, 8, 2, 128), (9, 6, 1, 32)])
def test_kernel_matches_gather_and_sdpa(n, heads, kv_heads, d, dtype, atol):
    g = torch.Generator().manual_seed(n * heads + d)
    block_size, num_blocks = 16, 128
    k_cache, v_cache = (torch.randn(num_blocks * block_size, kv_heads, d, generator=g).to(dtype) for _ in range(2))
    lengths = torch.randint(1, 120, (n,), generator=g)
    lengths[0] = 120  # one full width; the others end inside a block
    width = -(-int(lengths.max()) // block_size)
    blocks = torch.randperm(num_blocks, generator=g)[: n * width].view(n, width)
    q = torch.randn(n, heads, d, generator=g).to(dtype)
    out = paged_decode_attention(q, k_cache, v_cache, blocks, lengths, block_size)
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.float(), reference(q, k_cache, v_cache, blocks, lengths, block_size),
                               atol=atol, rtol=0)


@needs_kernel
def test_kernel_ignores_blocks_past_each_length():
    # Rows of length 5 use only their first block: poison in the rest must not leak into the result.
    k_cache, v_cache = torch.randn(4 * 8, 2, 16), torch.randn(4 * 8, 2, 16)
    q, blocks, lengths = torch.randn(2, 2, 16), torch.tensor([[0, 1], [2, 3]]), torch.tensor([5, 5])
    clean = paged_decode_attention(q, k_cache, v_cache, blocks, lengths, 8)
    for cache in (k_cache, v_cache):
        cache[5:8] = cache[8:16] = cache[21:24] = cache[24:32] = float("nan")
    assert torch.equal(paged_decode_attention(q, k_cache, v_cache, blocks, lengths, 8), clean)


@needs_kernel
def test_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("HEXSERVE_CPU_KERNELS", "0")
    paged_attention_cpu._library.cache_clear()
    try:
        assert not available(torch.empty(1, 1, 16))
    finally:
        monkeypatch.undo()
        paged_attention_cpu._library.cache_clear()
    assert available(torch.empty(1, 1, 16))
    assert not available(torch.empty(1, 1, 24))  # head sizes are handled 16 floats at a time
    assert not available(torch.empty(1, 1, 16, dtype=torch.float16))


def test_cache_key_changes_with_the_cpu_flags(monkeypatch):
    # A binary built with -march=native on one CPU may not run on another sharing the cache folder.
    monkeypatch.setattr(paged_attention_cpu, "_cpu_flags", lambda: "fpu sse2 avx2")
    avx2 = paged_attention_cpu._cache_key()
    assert paged_attention_cpu._cache_key() == avx2
    monkeypatch.setattr(paged_attention_cpu, "_cpu_flags", lambda: "fpu sse2 avx2 avx512f avx512_bf16")
    assert paged_attention_cpu._cache_key() != avx2


def test_cpu_flags_read_this_host():
    flags = paged_attention_cpu._cpu_flags()
    assert flags.strip()
    if Path("/proc/cpuinfo").is_file() and platform.machine() in ("x86_64", "AMD64"):
        assert "sse2" in flags.split()  # every x86-64 CPU has it: the flags line was found
