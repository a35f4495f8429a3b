"""`hexserve serve`: the OpenAI-compatible HTTP server over the engine (one process, or a plan's workers)."""

from __future__ import annotations

import argparse

from hexserve.cli_args import add_engine_args, engine_from_args, positive_int


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    add_engine_args(p)
    p.add_argument("--served-model-name", help="the name clients use (default: what --model was given)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--max-queue", type=positive_int, default=256,
                   help="requests held at once (running and waiting); more are answered 429")
    p.add_argument("--max-num-seqs", type=positive_int, default=None,
                   help="sequences batched together (default 64; with --plan: each replica's planned batch)")
    p.add_argument("--max-model-len", type=positive_int, help="cap on prompt + output tokens")
    p.add_argument("--num-kv-blocks", type=positive_int,
                   help="KV cache blocks per device (default: the engine's sizing; with --plan: the planned KV)")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level (default warning)")
    p.add_argument("--drain-timeout", type=seconds, default=None,
                   help="on SIGTERM/SIGINT, how long accepted requests may take to finish before they are "
                        "ended (default: twice what they need at the measured pace, at least 30 s)")
    p.set_defaults(run=run_serve)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def run_serve(args: argparse.Namespace) -> int:
    from hexserve.server.app import create_app  # heavy imports only for this command
    from hexserve.server.drain import serve
    from hexserve.server.engine_loop import engine_thread

    # Built on the thread that will step it: one thread does all the OpenMP work (engine_loop.py).
    thread = engine_thread()
    llm = thread.submit(engine_from_args, args, max_num_seqs=args.max_num_seqs, max_model_len=args.max_model_len,
                        num_kv_blocks=args.num_kv_blocks).result()
    name = args.served_model_name or args.model or (llm.plan.model if llm.plan else "smollm2")
    app = create_app(llm, name, api_key=args.api_key, max_queue=args.max_queue, thread=thread,
                     drain_timeout=args.drain_timeout)
    layout = f"plan {args.plan}: {len(llm.replicas)} replicas, " if args.plan else ""
    for line in llm.handoffs.describe() if llm.handoffs is not None else ():
        print(line, flush=True)
    print(f"hexserve serve: {name} on http://{args.host}:{args.port}/v1 "
          f"({layout}{llm.stats().blocks_total} KV blocks, context {llm.max_model_len})", flush=True)
    try:
        serve(app, args.host, args.port, args.log_level)  # returns once a signal has drained it
    finally:
        llm.shutdown()
    return 0
