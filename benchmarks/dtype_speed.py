"""float32 vs bfloat16 on this CPU, single process: SmolLM2's prefill of a 256-token prompt and one decode
step of 8 sequences (64-token contexts), 1 thread, the configurations interleaved round by round and
the best of the rounds kept (on a shared machine the minimum is the least disturbed figure).

    .venv/bin/python benchmarks/dtype_speed.py [--rounds 5] [--out benchmarks/results/dtype_speed.json]

docs/dtype.md quotes it; it is why `--dtype auto` is float32 on a CPU only in part (the rest is
correctness), so it records which bfloat16 instructions the CPU has.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from hexserve import LLM, SamplingParams

DTYPES = ("float32", "bfloat16")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_flags() -> set[str]:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))


def prefill_s(llm: LLM) -> float:
    start = time.perf_counter()
    llm.generate([list(range(1000, 1256))], SamplingParams(max_tokens=1, ignore_eos=True))
    return time.perf_counter() - start


def decode_step_s(llm: LLM, steps: int = 16) -> float:
    """Seconds per decode step: (prefill + steps + 1 tokens) minus (prefill + 1 token), over steps."""
    batch = [list(range(2000 + i, 2064 + i)) for i in range(8)]
    start = time.perf_counter()
    llm.generate(batch, SamplingParams(max_tokens=1, ignore_eos=True))
    short = time.perf_counter() - start
    start = time.perf_counter()
    llm.generate(batch, SamplingParams(max_tokens=steps + 1, ignore_eos=True))
    return (time.perf_counter() - start - short) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "dtype_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    llms = {d: LLM("smollm2", dtype=d, max_num_seqs=8, max_model_len=1024) for d in DTYPES}
    best = {d: {"prefill_256_s": float("inf"), "decode_step_8_s": float("inf")} for d in DTYPES}
    for _ in range(args.rounds):
        for d, llm in llms.items():
            best[d]["prefill_256_s"] = min(best[d]["prefill_256_s"], prefill_s(llm))
            best[d]["decode_step_8_s"] = min(best[d]["decode_step_8_s"], decode_step_s(llm))
    flags = cpu_flags()
    for key in ("prefill_256_s", "decode_step_8_s"):
        f, b = best["float32"][key], best["bfloat16"][key]
        print(f"{key:16} float32 {f * 1e3:8.1f} ms  bfloat16 {b * 1e3:8.1f} ms  bfloat16 takes {b / f:.2f}x")
    result = {"cpu": platform.processor() or platform.machine(), "bf16_flags": {f: f in flags for f in BF16_FLAGS},
              "torch": torch.__version__, "threads": 1, "rounds": args.rounds, "best_s": best}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
