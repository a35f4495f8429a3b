"""The HTTP server under load: `hexserve bench` against `hexserve serve --model smollm2` at three request
rates (throughput, TTFT, TPOT), the same against servers of plans of several CPU worker processes, and
the cost of the HTTP layer against the `LLM` API on the same requests.

    .venv/bin/python benchmarks/serving.py [--num-requests 16] [--scale 0.1] [--rates 0.5,1,inf] [--threads 1]
                                           [--plans examples/plans/smollm2-asym.json,cpu-local]

`cpu-local` in --plans means the planner's plan of SmolLM2 on examples/clusters/cpu-local.yaml, made here.

Requests come from the Azure conversation trace (seed 0), lengths times --scale so they stay short on a
CPU; every request generates exactly its output length (ignore_eos), greedy. The overhead run sends the
same prompts all at once both ways: through HTTP (bench at rate inf) and through `LLM.generate` in this
process while the server idles, alternated --repeats times (best of each kept: the CPU is shared).
Prints a table, writes benchmarks/results/serving.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import torch

from hexserve.bench.metrics import compute
from hexserve.bench.run import build_requests, completions_url, run_benchmark

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/serving.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(engine: list[str], port: int, max_model_len: int, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}  # torch's intra-op threads, as in this process
    proc = subprocess.Popen([sys.executable, "-m", "hexserve.cli", "serve", *engine, "--port", str(port),
                             "--max-model-len", str(max_model_len)], stdout=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not start")


def bench(url: str, model: str, args, rate: float) -> dict:
    inputs, times = build_requests(args.workload, args.num_requests, args.seed, args.scale, args.max_model_len, rate)
    results, duration = asyncio.run(run_benchmark(url, model, inputs, times, progress=False))
    m = compute(inputs, results, duration).to_json()
    return {"rate": None if rate == float("inf") else rate, **m}


class LLMRun:
    """The same requests through `LLM.generate` in this process (the idle server costs nothing meanwhile)."""

    def __init__(self, model: str, args):
        from hexserve.runtime.engine import LLM
        from hexserve.runtime.sampling import SamplingParams

        self.inputs, _ = build_requests(args.workload, args.num_requests, args.seed, args.scale, args.max_model_len)
        self.llm = LLM(model, max_model_len=args.max_model_len)
        self.params = [SamplingParams(max_tokens=r.output_len, temperature=0, ignore_eos=True) for r in self.inputs]
        self.llm.generate(self.inputs[0].prompt, self.params[0])  # warm up, as the server has been

    def seconds(self) -> float:
        start = time.perf_counter()
        outs = self.llm.generate([r.prompt for r in self.inputs], self.params)
        assert [len(o.token_ids) for o in outs] == [r.output_len for r in self.inputs]
        return time.perf_counter() - start


def bench_plan(name: str, args, rates: list[float]) -> list[dict]:
    """The same rates against `hexserve serve --plan` (one worker process per device, one thread each)."""
    path = name
    if name == "cpu-local":
        path = str(ROOT / "benchmarks/results/cpu-local-smollm2.json")
        subprocess.run([sys.executable, "-m", "hexserve.cli", "plan", "--cluster", "cpu-local", "--model", "smollm2",
                        "--out", path], check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    proc = start_server(["--plan", path, "--served-model-name", args.model], port, args.max_model_len, 1)
    url = completions_url(f"http://127.0.0.1:{port}")
    try:
        bench(url, args.model, argparse.Namespace(**{**vars(args), "num_requests": 2}), float("inf"))  # warm up
        return [bench(url, args.model, args, rate) for rate in rates]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--workload", default="azure-conv")
    ap.add_argument("--num-requests", type=int, default=16)
    ap.add_argument("--scale", type=float, default=0.1)
    ap.add_argument("--max-model-len", type=int, default=2048)
    ap.add_argument("--rates", default="0.5,1,inf")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the HTTP vs LLM API comparison")
    ap.add_argument("--plans", default="examples/plans/smollm2-asym.json,cpu-local",
                    help="plans to serve too (comma-separated paths; cpu-local: plan SmolLM2 on cpu-local here)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the server and of the LLM API run (1: least hurt by other jobs)")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    port = free_port()
    torch.set_num_threads(args.threads)
    proc = start_server(["--model", args.model], port, args.max_model_len, args.threads)
    url = completions_url(f"http://127.0.0.1:{port}")
    try:
        bench(url, args.model, argparse.Namespace(**{**vars(args), "num_requests": 2}), float("inf"))  # warm up
        runs = [bench(url, args.model, args, rate) for rate in rates]
        # The CPU is shared with other jobs: alternate the two ways and keep each one's best time.
        local, http_s, llm_s = LLMRun(args.model, args), [], []
        for _ in range(args.repeats):
            http_s.append(bench(url, args.model, args, float("inf"))["duration_s"])
            llm_s.append(local.seconds())
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    plan_runs = {name: bench_plan(name, args, rates) for name in filter(None, args.plans.split(","))}

    print(f"{'server':>28} {'rate req/s':>10} {'done':>5} {'req/s':>6} {'out tok/s':>9} {'TTFT mean':>10} "
          f"{'TTFT p99':>9} {'TPOT mean':>10} {'TPOT p99':>9}  (ms)")
    for name, served in [(f"--model {args.model}", runs)] + [(f"--plan {n}", r) for n, r in plan_runs.items()]:
        for r in served:
            print(f"{name[-28:]:>28} {r['rate'] or 'inf'!s:>10} {r['completed']:>5} {r['request_throughput']:>6.2f} "
                  f"{r['output_throughput']:>9.1f} {r['ttft_ms']['mean']:>10.0f} {r['ttft_ms']['p99']:>9.0f} "
                  f"{r['tpot_ms']['mean']:>10.0f} {r['tpot_ms']['p99']:>9.0f}")
    overhead = {"http_seconds": http_s, "llm_api_seconds": llm_s, "ratio": min(http_s) / min(llm_s)}
    print(f"HTTP vs LLM API, same {args.num_requests} requests at once (best of {args.repeats}): "
          f"{min(http_s):.2f} s vs {min(llm_s):.2f} s = {overhead['ratio']:.3f}x")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "model": args.model, "workload": args.workload, "num_requests": args.num_requests, "scale": args.scale,
        "seed": args.seed, "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "runs": runs, "plan_runs": plan_runs, "overhead": overhead,
        "command": "python benchmarks/serving.py " + " ".join(sys.argv[1:]),
    }, indent=2))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
