"""`hexserve generate`: run the engine (one process, or a plan's workers) on prompts and print the completions."""

from __future__ import annotations

import argparse
import json
import time

from hexserve.cli_args import add_engine_args, engine_from_args, positive_int
from hexserve.errors import SpecError


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate text with the built-in engine (one process, or a plan's workers)")
    add_engine_args(p)
    p.add_argument("--prompt", action="append", required=True, help="prompt text; repeat for a batch")
    p.add_argument("--max-tokens", type=positive_int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (the default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the chat template")
    p.add_argument("--json", action="store_true", help="print one JSON object per prompt")
    p.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from hexserve.runtime.sampling import SamplingParams

    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, seed=args.seed)
    with engine_from_args(args) as llm:
        start = time.perf_counter()
        if args.chat:
            outputs = llm.chat([[{"role": "user", "content": p}] for p in args.prompt], params)
        else:
            outputs = llm.generate(args.prompt, params)
        seconds = time.perf_counter() - start
    for out in outputs:
        if out.error:
            raise SpecError(out.error)
        if args.json:
            print(json.dumps({"prompt": out.prompt, "text": out.text, "token_ids": out.token_ids,
                              "finish_reason": out.finish_reason, "seconds": round(seconds, 3)}))
        else:
            print(out.text)
    return 0
