"""What vLLM's benchmark_serving reports: request and token throughput; TTFT, TPOT, ITL and end-to-end
latency as mean, median, std and p99 in milliseconds; completed and failed requests."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hexserve.bench.client import RequestInput, RequestResult


@dataclass
class Stats:
    mean: float
    median: float
    std: float
    p99: float

    @staticmethod
    def of(seconds: list[float]) -> Stats:
        ms = np.asarray(seconds or [0.0]) * 1e3
        return Stats(float(ms.mean()), float(np.median(ms)), float(ms.std()), float(np.percentile(ms, 99)))


@dataclass
class BenchmarkMetrics:
    completed: int
    failed: int
    duration_s: float
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float  # requests/s
    output_throughput: float  # output tokens/s
    total_token_throughput: float  # (input + output) tokens/s
    ttft_ms: Stats
    tpot_ms: Stats  # per request: (latency - ttft) / (output tokens - 1)
    itl_ms: Stats  # every gap between streamed chunks
    e2el_ms: Stats
    prompt_token_error: float | None  # mean (usage.prompt_tokens - intended) / intended

    def to_json(self) -> dict:
        return asdict(self)


def compute(inputs: list[RequestInput], results: list[RequestResult], duration_s: float) -> BenchmarkMetrics:
    ok = [(i, r) for i, r in zip(inputs, results, strict=True) if r.success]
    tin = sum(r.prompt_tokens if r.prompt_tokens is not None else i.prompt_len for i, r in ok)
    tout = sum(r.output_tokens for _, r in ok)
    tpots = [(r.latency - r.ttft) / (r.output_tokens - 1) for _, r in ok if r.output_tokens > 1]
    errors = [(r.prompt_tokens - i.prompt_len) / i.prompt_len for i, r in ok if r.prompt_tokens is not None]
    d = max(duration_s, 1e-9)
    return BenchmarkMetrics(
        completed=len(ok), failed=len(results) - len(ok), duration_s=duration_s,
        total_input_tokens=tin, total_output_tokens=tout,
        request_throughput=len(ok) / d, output_throughput=tout / d, total_token_throughput=(tin + tout) / d,
        ttft_ms=Stats.of([r.ttft for _, r in ok]), tpot_ms=Stats.of(tpots),
        itl_ms=Stats.of([g for _, r in ok for g in r.itl]), e2el_ms=Stats.of([r.latency for _, r in ok]),
        prompt_token_error=float(np.mean(errors)) if errors else None,
    )
