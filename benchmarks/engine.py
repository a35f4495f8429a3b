"""Engine throughput on SmolLM2: hexserve vs transformers `generate`, one request at a time and in padded
batches, on requests whose prompt/output lengths come from the Azure LLM conversation trace (2023).

    .venv/bin/python benchmarks/engine.py [--requests 32] [--context 8192] [--threads 2]

The trace's lengths are scaled by one factor so that its longest request (prompt + output) fits
`--context` (default: the model's context). Every request generates exactly its output length
(ignore_eos / min_new_tokens), greedy, float32. Also measured: the decode step at batch 1 against the
weight-read bound (weight bytes / measured memory bandwidth). Prints a table, writes
benchmarks/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from pathlib import Path

import torch

from hexserve.runtime.engine import LLM
from hexserve.runtime.sampling import SamplingParams
from hexserve.specs.workload import Workload, load_workload

ROOT = Path(__file__).resolve().parents[1]


def trace_requests(trace: Workload, n: int, context: int, seed: int) -> tuple[list[tuple[int, int]], float]:
    rows = [(r.prompt_len, r.output_len) for r in trace.requests]
    scale = min(1.0, context / max(p + o for p, o in rows))
    picked = random.Random(seed).sample(rows, n)
    return [(max(1, round(p * scale)), max(1, round(o * scale))) for p, o in picked], scale


def make_prompts(lengths: list[tuple[int, int]], vocab: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(100, vocab, (p,), generator=g).tolist() for p, _ in lengths]


def run_hexserve(llm: LLM, prompts, lengths) -> float:
    params = [SamplingParams(temperature=0, max_tokens=o, ignore_eos=True) for _, o in lengths]
    start = time.perf_counter()
    outs = llm.generate(prompts, params)
    seconds = time.perf_counter() - start
    assert [len(o.token_ids) for o in outs] == [o for _, o in lengths]
    return seconds


def hf_generate(model, batch: list[list[int]], new_tokens: int, pad: int) -> None:
    width = max(map(len, batch))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                       do_sample=False, pad_token_id=pad)


def run_hf_one_at_a_time(model, prompts, lengths, pad: int) -> float:
    start = time.perf_counter()
    for p, (_, o) in zip(prompts, lengths, strict=True):
        hf_generate(model, [p], o, pad)
    return time.perf_counter() - start


def run_hf_batched(model, prompts, lengths, pad: int, batch_size: int) -> float:
    # A padded batch runs until its longest output: tokens past a request's own length are waste.
    start = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        hf_generate(model, prompts[i : i + batch_size], max(o for _, o in lengths[i : i + batch_size]), pad)
    return time.perf_counter() - start


def memory_bandwidth() -> float:
    """Bytes/s of a streaming read (sum of a 1 GiB float32 tensor), best of 5."""
    x = torch.ones(2**28)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def decode_step_seconds(llm: LLM, prompt: list[int], steps: int = 64) -> float:
    def timed(n: int) -> float:
        start = time.perf_counter()
        llm.generate(prompt, SamplingParams(temperature=0, max_tokens=n, ignore_eos=True))
        return time.perf_counter() - start

    timed(2)
    return (timed(steps + 1) - timed(1)) / steps


def hf_decode_step_seconds(model, prompt: list[int], pad: int, steps: int = 64) -> float:
    def timed(n: int) -> float:
        start = time.perf_counter()
        hf_generate(model, [prompt], n, pad)
        return time.perf_counter() - start

    timed(2)
    return (timed(steps + 1) - timed(1)) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--context", type=int, default=None, help="scale the trace to this context (default: model's)")
    ap.add_argument("--hf-batch", type=int, default=8, help="transformers padded batch size (0: skip that run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", help="both engines compute in hexserve's choice for this (auto: "
                    "float32 on a CPU; give bfloat16 on CPUs with avx512_bf16 or amx_bf16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/engine.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForCausalLM

    llm = LLM(args.model, dtype=args.dtype)
    context = args.context or llm.max_model_len
    lengths, scale = trace_requests(load_workload("azure-conv"), args.requests, context, args.seed)
    prompts = make_prompts(lengths, llm.config.spec.vocab_size, args.seed)
    out_tokens = sum(o for _, o in lengths)
    hf = AutoModelForCausalLM.from_pretrained(str(llm.path), dtype=llm.dtype).eval()
    pad = llm.config.eos_token_ids[0] if llm.config.eos_token_ids else 0

    run_hexserve(llm, prompts[:2], lengths[:2])  # warm up both engines
    hf_generate(hf, prompts[:1], 2, pad)
    runs = {
        "hexserve": lambda: run_hexserve(llm, prompts, lengths),
        "transformers one at a time": lambda: run_hf_one_at_a_time(hf, prompts, lengths, pad),
    }
    if args.hf_batch:
        runs[f"transformers padded batches of {args.hf_batch}"] = lambda: run_hf_batched(hf, prompts, lengths, pad,
                                                                                         args.hf_batch)
    seconds = {}
    for name, run in runs.items():
        seconds[name] = run()
        print(f"  {name}: {seconds[name]:.1f} s", file=sys.stderr, flush=True)
    base = out_tokens / seconds["transformers one at a time"]
    rows = [{"engine": k, "seconds": round(s, 2), "output_tokens_per_s": round(out_tokens / s, 1),
             "vs_one_at_a_time": round(out_tokens / s / base, 2)} for k, s in seconds.items()]

    probe = prompts[0][:128]
    weight_bytes = llm.config.spec.params * torch.empty(0, dtype=llm.dtype).element_size()
    bandwidth = memory_bandwidth()
    decode = {
        "hexserve_step_ms": round(decode_step_seconds(llm, probe) * 1e3, 2),
        "transformers_step_ms": round(hf_decode_step_seconds(hf, probe, pad) * 1e3, 2),
        "weight_read_bound_ms": round(weight_bytes / bandwidth * 1e3, 2),
        "weight_bytes": weight_bytes,
        "memory_bandwidth_GBps": round(bandwidth / 1e9, 1),
        "context_tokens": len(probe),
    }
    decode["hexserve_vs_bound"] = round(decode["hexserve_step_ms"] / decode["weight_read_bound_ms"], 2)

    print(f"{args.requests} requests from the Azure conversation trace scaled by {scale:.3f} to a {context}-token "
          f"context: {sum(p for p, _ in lengths)} prompt tokens, {out_tokens} output tokens; "
          f"{args.threads} threads, {llm.dtype}, {llm.device}")
    print(f"{'engine':<34} {'seconds':>9} {'out tok/s':>10} {'vs 1-at-a-time':>15}")
    for r in rows:
        tps, ratio = r["output_tokens_per_s"], r["vs_one_at_a_time"]
        print(f"{r['engine']:<34} {r['seconds']:>9.2f} {tps:>10.1f} {ratio:>14.2f}x")
    print(f"decode step at batch 1 ({len(probe)}-token context): hexserve {decode['hexserve_step_ms']} ms, "
          f"transformers {decode['transformers_step_ms']} ms, weight-read bound {decode['weight_read_bound_ms']} ms "
          f"({weight_bytes / 1e6:.0f} MB at {decode['memory_bandwidth_GBps']} GB/s)")
    result = {
        "model": args.model, "device": str(llm.device), "dtype": str(llm.dtype), "threads": args.threads,
        "machine": platform.processor() or platform.machine(), "requests": args.requests, "context": context,
        "trace_scale": round(scale, 4), "prompt_tokens": sum(p for p, _ in lengths), "output_tokens": out_tokens,
        "lengths": lengths, "throughput": rows, "decode_batch1": decode,
        "engine_steps": llm.num_steps, "preemptions": llm.stats().preemptions,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
