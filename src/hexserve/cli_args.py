"""Argument types shared by the `hexserve` subcommands: a bad value is an argparse error (exit 2)."""

from __future__ import annotations

import argparse


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
                   help="with --plan: batches in flight per replica (default: its number of stages)")
    p.add_argument("--router", default="shares", choices=("shares", "least-loaded"),
                   help="with --plan: follow the plan's replica shares, or send to the least loaded replica")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present; with --plan: "
                   "cpu or cuda for all workers)")
    p.add_argument("--dtype", default="auto",
                   help="auto (CPU: the faster of bfloat16 and float32, timed; GPU: the checkpoint's), float32, ...")


def engine_from_args(args: argparse.Namespace, **sizes):
    """The LLM that --model / --plan and the other engine options describe."""
    from hexserve.runtime.engine import LLM  # torch and transformers load only for commands that run a model

    options = dict(dtype=args.dtype, micro_batches=args.micro_batches, router=args.router, **sizes)
    if args.plan:
        return LLM(args.model, plan=args.plan, device=args.device, **options)
    return LLM(args.model or "smollm2", device=args.device, **options)
