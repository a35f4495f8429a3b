"""Argument types shared by the `hexserve` subcommands: a bad value is an argparse error (exit 2)."""

from __future__ import annotations

import argparse

from hexserve.errors import SpecError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """What chooses and sizes the engine: a model alone (one process) or a plan (its worker processes)."""
    p.add_argument("--model", default=None,
                   help="a Hugging Face checkpoint folder, or smollm2 (the default; with --plan: the plan's model)")
    p.add_argument("--plan", help="a plan JSON from `hexserve plan`: run its replicas on one process per device")
    p.add_argument("--micro-batches", type=positive_int,
                   help="with --plan: batches in flight per replica (default: the plan's, else its number of stages)")
    p.add_argument("--router", default="shares", choices=("shares", "least-loaded"),
                   help="with --plan: follow the plan's replica shares, or send to the least loaded replica")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present; with --plan: "
                   "cpu or cuda for all workers)")
    p.add_argument("--cluster", default=None,
                   help="with --plan: the plan's cluster, a YAML file or shipped name (default: the one it names)")
    p.add_argument("--dtype", default="auto",
                   help="auto (CPU: float32 on every CPU; GPU: the checkpoint's, bfloat16 for float32 ones), "
                        "float32, bfloat16 (faster on CPUs with avx512_bf16 or amx_bf16), float16")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads of this process (default: the cores it may use; with --plan: 1, as each "
                        "worker process takes one)")


def engine_from_args(args: argparse.Namespace, **sizes):
    """The LLM that --model / --plan and the other engine options describe."""
    from hexserve.runtime.device import available_cores  # torch loads only for commands that run a model
    from hexserve.runtime.engine import LLM

    options = dict(dtype=args.dtype, micro_batches=args.micro_batches, router=args.router, **sizes)
    if args.plan:
        # The leader only schedules: one thread, so that it never competes with the workers for a core.
        return LLM(args.model, plan=args.plan, cluster=args.cluster, device=args.device, threads=args.threads or 1,
                   **options)
    if args.cluster:
        raise SpecError("--cluster: it names a plan's cluster; give --plan too, or leave --cluster out")
    return LLM(args.model or "smollm2", device=args.device, threads=args.threads or available_cores(), **options)
