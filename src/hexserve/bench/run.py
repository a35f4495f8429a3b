"""`hexserve bench`: pick requests from a trace, send them at the arrival times (Poisson at --rate, or
all at once), stream every answer, and report as vLLM's benchmark_serving does."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from hexserve.bench.client import RequestInput, RequestResult, send
from hexserve.bench.metrics import BenchmarkMetrics, compute
from hexserve.bench.prompts import synthetic_prompt
from hexserve.errors import SpecError
from hexserve.specs.workload import load_workload


def completions_url(endpoint: str) -> str:
    base = endpoint.rstrip("/").removesuffix("/v1")
    return f"{base}/v1/completions"


def build_requests(workload: str, n: int, seed: int, scale: float = 1.0, max_model_len: int | None = None,
                   rate: float = float("inf")) -> tuple[list[RequestInput], list[float]]:
    """n requests of the trace (sampled with `seed`), lengths times `scale`; their send times in seconds."""
    w = load_workload(workload)
    scaled = [(max(1, round(r.prompt_len * scale)), max(1, round(r.output_len * scale))) for r in w.requests]
    fits = [i for i, (p, o) in enumerate(scaled) if max_model_len is None or p + o + 1 <= max_model_len]
    if not fits:
        raise SpecError(f"bench: no request of {workload} fits --max-model-len {max_model_len}; lower --scale")
    picked = sorted(random.Random(seed).sample(fits, min(n, len(fits))))
    rng = random.Random(seed)
    inputs = [RequestInput(synthetic_prompt(scaled[i][0], rng), *scaled[i]) for i in picked]
    if rate == float("inf"):
        return inputs, [0.0] * len(inputs)
    gaps = [rng.expovariate(rate) for _ in inputs]
    times = [sum(gaps[1 : k + 1]) for k in range(len(gaps))]  # the first request goes at once
    return inputs, times


async def run_benchmark(url: str, model: str, inputs: list[RequestInput], times: list[float], *,
                        api_key: str | None = None, max_concurrency: int | None = None, timeout: float = 600.0,
                        progress: bool = True) -> tuple[list[RequestResult], float]:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=max_concurrency or len(inputs) + 1, max_keepalive_connections=32)
    gate = asyncio.Semaphore(max_concurrency or len(inputs) + 1)
    bar = Progress(TextColumn("bench"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   disable=not progress, console=Console(stderr=True))
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=timeout) as client:
        start = time.perf_counter()

        async def one(req: RequestInput, at: float) -> RequestResult:
            await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
            async with gate:
                result = await send(client, url, model, req)
            bar.advance(task)
            return result

        with bar:
            task = bar.add_task("requests", total=len(inputs))
            results = await asyncio.gather(*(one(r, t) for r, t in zip(inputs, times, strict=True)))
        return list(results), time.perf_counter() - start


def print_report(m: BenchmarkMetrics, console: Console, title: str = "Serving Benchmark Result") -> None:
    table = Table(title=title, show_header=False, show_edge=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows = [("Successful requests", f"{m.completed}"), ("Failed requests", f"{m.failed}"),
            ("Benchmark duration (s)", f"{m.duration_s:.2f}"), ("Total input tokens", f"{m.total_input_tokens}"),
            ("Total generated tokens", f"{m.total_output_tokens}"),
            ("Request throughput (req/s)", f"{m.request_throughput:.2f}"),
            ("Output token throughput (tok/s)", f"{m.output_throughput:.2f}"),
            ("Total token throughput (tok/s)", f"{m.total_token_throughput:.2f}")]
    for name, s in (("TTFT", m.ttft_ms), ("TPOT", m.tpot_ms), ("ITL", m.itl_ms), ("E2E latency", m.e2el_ms)):
        rows += [(f"Mean {name} (ms)", f"{s.mean:.2f}"), (f"Median {name} (ms)", f"{s.median:.2f}"),
                 (f"P99 {name} (ms)", f"{s.p99:.2f}")]
    if m.prompt_token_error is not None:
        rows.append(("Prompt tokens vs intended (mean)", f"{m.prompt_token_error:+.1%}"))
    for row in rows:
        table.add_row(*row)
    console.print(table)


def run_from_args(args: argparse.Namespace) -> int:
    inputs, times = build_requests(args.workload, args.num_requests, args.seed, args.scale, args.max_model_len,
                                   args.rate)
    results, duration = asyncio.run(run_benchmark(
        completions_url(args.endpoint), args.model, inputs, times, api_key=args.api_key or os.environ.get(
            "OPENAI_API_KEY"), max_concurrency=args.max_concurrency, timeout=args.timeout,
        progress=not args.no_progress))
    metrics = compute(inputs, results, duration)
    console = Console(width=100 if not sys.stdout.isatty() else None, highlight=False)
    print_report(metrics, console, f"{args.workload}, {len(inputs)} requests at rate {args.rate:g}/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"endpoint": args.endpoint, "model": args.model, "workload": args.workload,
                       "rate": None if args.rate == float("inf") else args.rate, "num_requests": len(inputs),
                       "seed": args.seed, "scale": args.scale, **metrics.to_json(),
                       "errors": sorted({r.error for r in results if r.error})[:10]}, f, indent=2)
    if metrics.completed == 0:
        first = next((r.error for r in results if r.error), "unknown")
        raise SpecError(f"bench: every request failed; first error: {first}")
    return 0
