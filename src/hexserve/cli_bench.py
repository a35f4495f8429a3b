"""`hexserve bench`: replay a trace's prompt and output lengths against an OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse

from hexserve.cli_args import positive_int
from hexserve.errors import SpecError


def rate(text: str) -> float:
    if text.lower() in ("inf", "infinity"):
        return float("inf")
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected requests per second or inf, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 (or inf: all at once), got {text}")
    return value


def register(sub) -> None:
    p = sub.add_parser("bench", help="replay a trace against an OpenAI-compatible endpoint (like vLLM's "
                                     "benchmark_serving)")
    p.add_argument("--endpoint", required=True, help="server base URL, e.g. http://127.0.0.1:8000 (or .../v1)")
    p.add_argument("--model", required=True, help="model name the server serves")
    p.add_argument("--workload", default="azure-conv", help="azure-conv, azure-conv:CLASS, or a CSV/JSONL path")
    p.add_argument("--rate", type=rate, default=float("inf"), help="requests per second (Poisson), or inf")
    p.add_argument("--num-requests", type=positive_int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-concurrency", type=positive_int, help="cap on requests in flight at once")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the trace's lengths (e.g. 0.1 to fit a small model's context)")
    p.add_argument("--max-model-len", type=positive_int,
                   help="drop requests whose prompt + output exceed this many tokens (after --scale)")
    p.add_argument("--api-key", help="sent as Authorization: Bearer KEY (default $OPENAI_API_KEY)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from hexserve.bench.run import run_from_args

    if args.scale <= 0:
        raise SpecError(f"bench: --scale must be > 0, got {args.scale}")
    return run_from_args(args)
