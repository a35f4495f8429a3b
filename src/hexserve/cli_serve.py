"""`hexserve serve`: the OpenAI-compatible HTTP server over the single-process engine."""

from __future__ import annotations

import argparse

from hexserve.cli_args import positive_int
from hexserve.errors import SpecError


def register(sub) -> None:
    p = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API")
    p.add_argument("--model", help="a Hugging Face checkpoint folder, or smollm2")
    p.add_argument("--plan", help="a plan JSON (needs the distributed runtime; not available yet)")
    p.add_argument("--served-model-name", help="the name clients use (default: what --model was given)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=positive_int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--max-queue", type=positive_int, default=256,
                   help="requests held at once (running and waiting); more are answered 429")
    p.add_argument("--max-num-seqs", type=positive_int, default=64, help="sequences batched together")
    p.add_argument("--max-model-len", type=positive_int, help="cap on prompt + output tokens")
    p.add_argument("--num-kv-blocks", type=positive_int, help="KV cache blocks (default: the engine's sizing)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when present)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--log-level", default="warning", help="uvicorn's log level (default warning)")
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    if args.plan:
        raise SpecError("serving a plan needs the distributed runtime; use --model")
    if not args.model:
        raise SpecError("serve: give --model (a Hugging Face checkpoint folder or smollm2)")
    import uvicorn  # heavy imports only for this command

    from hexserve.runtime.engine import LLM
    from hexserve.server.app import create_app

    llm = LLM(args.model, device=args.device, dtype=args.dtype, max_num_seqs=args.max_num_seqs,
              max_model_len=args.max_model_len, num_kv_blocks=args.num_kv_blocks)
    app = create_app(llm, args.served_model_name or args.model, api_key=args.api_key, max_queue=args.max_queue)
    print(f"hexserve serve: {args.served_model_name or args.model} on http://{args.host}:{args.port}/v1 "
          f"({llm.blocks.num_blocks} KV blocks, context {llm.max_model_len})", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
