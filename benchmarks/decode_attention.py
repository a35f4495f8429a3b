"""Decode attention on the CPU: the paged kernel (reads the cache in place) against gather + SDPA (the
path it replaced, still used on GPUs), on SmolLM2's attention shape over all 30 layers of a realistic cache.

    .venv/bin/python benchmarks/decode_attention.py [--threads 2] [--repeats 5]

Each case is a decode step's attention: n sequences of `context` tokens, their blocks scattered over a
cache of 8,192 blocks per layer (as a busy engine leaves them), one layer after another so that nothing
stays in the CPU caches between layers. Best of --repeats. Prints a table, writes
benchmarks/results/decode_attention.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hexserve.runtime.device import dtype_name
from hexserve.runtime.layers.paged_attention_cpu import available, paged_decode_attention

ROOT = Path(__file__).resolve().parents[1]
LAYERS, HEADS, KV_HEADS, HEAD_DIM, BLOCK = 30, 9, 3, 64, 16  # SmolLM2-135M
CASES = [(1, 128), (1, 1400), (3, 1400), (10, 736), (32, 464), (32, 1024)]


def gather_sdpa(q, k_cache, v_cache, blocks, lengths) -> torch.Tensor:
    """The padded path: whole blocks copied out of the cache, a mask past each length, SDPA."""
    n, width = blocks.shape
    keys, values = (c.view(-1, BLOCK, KV_HEADS, HEAD_DIM).index_select(0, blocks.flatten()) for c in (k_cache, v_cache))
    keys, values = (t.view(n, -1, KV_HEADS, HEAD_DIM).transpose(1, 2) for t in (keys, values))
    hidden = torch.arange(width * BLOCK) >= lengths[:, None]
    mask = torch.zeros(hidden.shape, dtype=q.dtype).masked_fill_(hidden, float("-inf")).view(n, 1, 1, -1)
    grouped = q.view(n, KV_HEADS, HEADS // KV_HEADS, HEAD_DIM)
    return F.scaled_dot_product_attention(grouped, keys, values, attn_mask=mask).reshape(n, HEADS, HEAD_DIM)


def best_ms(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def measure(cache: torch.Tensor, n: int, context: int, g: torch.Generator, repeats: int) -> dict:
    """Both paths over every layer for n sequences of `context` tokens."""
    width = -(-context // BLOCK)
    blocks = torch.randperm(cache.shape[2] // BLOCK, generator=g)[: n * width].view(n, width)
    lengths = torch.full((n,), context)
    q = torch.randn(n, HEADS, HEAD_DIM, generator=g).to(cache.dtype)
    error = max((paged_decode_attention(q, cache[0, i], cache[1, i], blocks, lengths, BLOCK).float()
                 - gather_sdpa(q, cache[0, i], cache[1, i], blocks, lengths).float()).abs().max().item()
                for i in range(2))
    kernel = best_ms(lambda: [paged_decode_attention(q, cache[0, i], cache[1, i], blocks, lengths, BLOCK)
                              for i in range(LAYERS)], repeats)
    gather = best_ms(lambda: [gather_sdpa(q, cache[0, i], cache[1, i], blocks, lengths) for i in range(LAYERS)],
                     repeats)
    kv_bytes = n * context * KV_HEADS * HEAD_DIM * 2 * cache.element_size() * LAYERS
    return {"dtype": dtype_name(cache.dtype), "sequences": n, "context": context,
            "kv_MB": round(kv_bytes / 1e6, 1), "kernel_ms": round(kernel, 2), "gather_sdpa_ms": round(gather, 2),
            "speedup": round(gather / kernel, 2), "kernel_GBps": round(kv_bytes / kernel / 1e6, 1),
            "max_abs_diff": error}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/decode_attention.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not available(torch.empty(1, 1, HEAD_DIM)):
        raise SystemExit("the CPU kernel is not available here (no C compiler, or HEXSERVE_CPU_KERNELS=0)")
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator().manual_seed(0)
        cache = torch.randn(2, LAYERS, 8192 * BLOCK, KV_HEADS, HEAD_DIM, generator=g).to(dtype)
        rows += [measure(cache, n, context, g, args.repeats) for n, context in CASES]
    print(f"decode attention over {LAYERS} layers, {HEADS} heads / {KV_HEADS} KV heads x {HEAD_DIM}, "
          f"block {BLOCK}, {args.threads} threads (best of {args.repeats})")
    print(f"{'dtype':<9} {'seqs':>4} {'context':>7} {'KV MB':>7} {'kernel ms':>10} {'gather+SDPA ms':>15} "
          f"{'speed-up':>9} {'kernel GB/s':>12} {'max diff':>9}")
    for r in rows:
        print(f"{r['dtype']:<9} {r['sequences']:>4} {r['context']:>7} {r['kv_MB']:>7} {r['kernel_ms']:>10} "
              f"{r['gather_sdpa_ms']:>15} {r['speedup']:>8}x {r['kernel_GBps']:>12} {r['max_abs_diff']:>9.1e}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
