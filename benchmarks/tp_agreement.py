"""Token agreement of the shipped plans: how often a plan's greedy tokens differ from the single-process
engine's at the same dtype.

    .venv/bin/python benchmarks/tp_agreement.py [--prompts N] [--max-tokens 32] [--dtypes float32,bfloat16]
                                                [--plans asym,cpu-local] [--split-replicas] [--no-hf]
                                                [--out benchmarks/results/tp_agreement.json]

For each dtype, the same fixed chat prompts (PROMPTS, through the chat template, greedy, --max-tokens)
run through `LLM("smollm2", dtype=...)` in this process and through each plan: every file in
examples/plans/ (by its stem without "smollm2-", e.g. "asym") and "cpu-local", the plan
`hexserve plan --cluster cpu-local --model smollm2` writes (made here, in a scratch folder). A plan's
router spreads the prompts over its replicas by their shares; the replica that served each prompt is
recorded and the agreement is given per replica too. --split-replicas also runs each replica of a
several-replica plan alone (a one-replica plan, share 1) on every prompt. In a disaggregated plan every
request passes through a prefill replica (its prompt and first token) and a decode replica (the rest),
so it has no per-replica figures.

Per comparison: prompts whose tokens are all identical (a sequence that stops at EOS counts as
identical only if both stop at the same token), prompts whose first token differs, and for the
prompts that differ the position of the first differing token (0 = the first generated token); and
the answer to "What is the capital of France?" in the batch and asked alone after it. A bfloat16 plan
is also compared with the float32 single process ("identical to single float32"). As
context: bfloat16 against float32 in one process (how fragile bfloat16 is by itself), and float32 in
one process against Hugging Face transformers' float32 greedy `generate`, one prompt at a time.

Prints a table and writes --out (JSON; no machine paths: the host is its CPU model name, its
bfloat16-related CPU flags and the torch version). Runs under another tree's sources too
(PYTHONPATH=<tree>/src), which is how docs/dtype.md's "before" figure was made.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import hexserve
from hexserve import LLM, SamplingParams
from hexserve.planner.plan import Plan, load_plan

ROOT = Path(__file__).resolve().parents[1]
PLANS_DIR = ROOT / "examples" / "plans"
RESULTS = Path(__file__).parent / "results" / "tp_agreement.json"
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")
FRANCE = "What is the capital of France?"

# Short, real chat requests of many kinds; fixed so that runs compare. The first is the one quoted.
PROMPTS = [
    FRANCE,
    "What is the capital of Japan?",
    "Who wrote Romeo and Juliet?",
    "What is the largest planet in the solar system?",
    "How many continents are there?",
    "What is the boiling point of water in Celsius?",
    "Who painted the Mona Lisa?",
    "What is the chemical symbol for gold?",
    "In which year did World War II end?",
    "What is the longest river in Africa?",
    "What is 7 times 8?",
    "What is 15 plus 27?",
    "What is the square root of 81?",
    "If I have 3 apples and eat one, how many are left?",
    "What is 100 divided by 4?",
    "Convert 5 kilometers to meters.",
    "Is 17 a prime number?",
    "Write a Python function that returns the sum of a list.",
    "How do I reverse a string in Python?",
    "What does HTML stand for?",
    "Write a SQL query that selects all rows from a table named users.",
    "What is a variable in programming?",
    "Explain what a for loop does.",
    "What is the difference between a list and a tuple in Python?",
    "Translate 'good morning' into French.",
    "Translate 'thank you' into Spanish.",
    "How do you say 'hello' in German?",
    "Translate 'I love books' into Italian.",
    "List three primary colors.",
    "Name five fruits.",
    "List the days of the week.",
    "Give me three tips for better sleep.",
    "Name four animals that live in the ocean.",
    "What are the three states of matter?",
    "Write a haiku about autumn.",
    "Write one sentence about the sea.",
    "Suggest a name for a pet cat.",
    "Tell me a short joke.",
    "Why is the sky blue?",
    "What causes rain?",
    "How does photosynthesis work?",
    "What is gravity?",
    "Why do we have seasons?",
    "What is the opposite of 'hot'?",
    "Give a synonym for 'happy'.",
    "Spell the word 'necessary' backwards.",
    "Summarize the story of Cinderella in one sentence.",
    "What should I eat for breakfast?",
    "How can I learn to play the guitar?",
    "What is a healthy way to reduce stress?",
    "How many legs does a spider have?",
    "What is the freezing point of water in Fahrenheit?",
    "Who was the first person to walk on the Moon?",
    "What language is spoken in Brazil?",
    "Describe a cat in three words.",
    "What is machine learning?",
]


# ----------------------------------------------------------------------------- host and plans


def host() -> dict:
    """What decides bfloat16 numerics on a CPU: its model, its bf16 instructions, torch's version."""
    flags: set[str] = set()
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    return {
        "cpu": model,
        "bf16_flags": {f: f in flags for f in BF16_FLAGS},
        "torch": torch.__version__,
        "hexserve_commit": source_commit(),
    }


def source_commit() -> str:
    """The commit of the hexserve sources imported (this tree's or another's, under PYTHONPATH);
    "+changes" when they have uncommitted edits."""
    src = Path(hexserve.__file__).parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if dirty else "")


def cpu_local_plan(folder: Path) -> Path:
    """The plan `hexserve plan --cluster cpu-local --model smollm2` writes, made by the CLI's own main."""
    from hexserve.cli import main

    out = folder / "cpu-local.json"
    with contextlib.redirect_stdout(io.StringIO()):  # its plan report would bury the table
        code = main(["plan", "--cluster", "cpu-local", "--model", "smollm2", "--out", str(out)])
    if code != 0:
        raise SystemExit(f"hexserve plan --cluster cpu-local failed with exit code {code}")
    return out


def plan_files(names: list[str], scratch: Path) -> dict[str, Path]:
    """Each plan name ("cpu-local", a shipped plan's short name, or a JSON file) and its file."""
    shipped = {p.stem.removeprefix("smollm2-"): p for p in sorted(PLANS_DIR.glob("*.json"))}
    found = {}
    for name in names:
        if name == "cpu-local":
            found[name] = cpu_local_plan(scratch)
        elif name in shipped:
            found[name] = shipped[name]
        elif Path(name).is_file():
            found[Path(name).stem] = Path(name)
        else:
            raise SystemExit(f"--plans: {name!r} is not cpu-local, a file, or one of {', '.join(shipped)}")
    return found


def describe(plan: Plan) -> list[str]:
    """One line per replica: its role unless colocated, its stages as TP degree and layer range."""
    stages = [" + ".join(f"TP-{s.tp} layers {s.layers[0]}-{s.layers[1] - 1}" for s in r.stages) for r in plan.replicas]
    return [f"{r.role} {s}" if r.role != "colocated" else s for r, s in zip(plan.replicas, stages, strict=True)]


def colocated(plan: Plan) -> bool:
    """Each request runs on one replica (else a prefill replica hands it to a decode replica)."""
    return all(r.role == "colocated" for r in plan.replicas)


def alone(plan: Plan, index: int) -> Plan:
    """Replica `index` of the plan as a one-replica plan that takes every request."""
    return dataclasses.replace(plan, replicas=(dataclasses.replace(plan.replicas[index], share=1.0),))


# ----------------------------------------------------------------------------- runs


@dataclasses.dataclass
class Outcome:
    tokens: list[list[int]]  # greedy tokens of every prompt, all queued at once
    served: list[int]  # the replica that served each
    alone: list[int]  # the first prompt's tokens when it is asked alone, after the batch
    alone_served: int


def run(llm: LLM, prompts: list[list[int]], max_tokens: int) -> Outcome:
    """Every prompt queued at once, then the first asked again alone: in bfloat16 the batch a prompt
    shares a step with can change its tokens (the rows change the kernels' blocking), and the
    question quoted in bug reports was asked alone."""
    batched, served = generate(llm, prompts, max_tokens)
    alone, alone_served = generate(llm, prompts[:1], max_tokens)
    return Outcome(batched, served, alone[0], alone_served[0])


def generate(llm: LLM, prompts: list[list[int]], max_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Greedy tokens of every prompt, all queued at once, and the replica that served each."""
    params = SamplingParams(temperature=0, max_tokens=max_tokens)
    requests = [llm.add_request(p, params) for p in prompts]
    while llm.has_work():
        llm.step()
    outputs = [llm.output(r) for r in requests]
    failed = [o.error for o in outputs if o.finish_reason == "error"]
    if failed:
        raise SystemExit(f"{len(failed)} requests failed: {failed[0]}")
    return [o.token_ids for o in outputs], [r.seq.replica for r in requests]


def single(dtype: str, prompts: list[list[int]], max_tokens: int) -> Outcome:
    with LLM("smollm2", dtype=dtype) as llm:
        return run(llm, prompts, max_tokens)


def planned(plan: Plan, dtype: str, prompts: list[list[int]], max_tokens: int) -> Outcome:
    with LLM("smollm2", plan=plan, dtype=dtype) as llm:
        return run(llm, prompts, max_tokens)


def hf_greedy(prompts: list[list[int]], max_tokens: int) -> Outcome:
    """transformers' float32 greedy generate, one unpadded prompt at a time (as tests/checkpoints.py)."""
    from transformers import AutoModelForCausalLM

    with LLM("smollm2", dtype="float32", num_kv_blocks=16) as llm:  # only to find the converted checkpoint
        folder, eos = llm.path, set(llm.eos_token_ids)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model.generation_config.eos_token_id = sorted(eos)  # stop where the engine stops
    outs = []
    with torch.no_grad():
        for p in prompts:
            out = model.generate(torch.tensor([p]), max_new_tokens=max_tokens, do_sample=False,
                                 attention_mask=torch.ones(1, len(p), dtype=torch.long))
            outs.append(out[0, len(p):].tolist())
    return Outcome(outs, [0] * len(outs), outs[0], 0)


# ----------------------------------------------------------------------------- comparison


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first generated token where a and b differ (a shorter one differs where it ends)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(test: list[list[int]], ref: list[list[int]], subset: list[int] | None = None) -> dict:
    """Agreement of `test` with `ref` over the prompts in `subset` (default all)."""
    subset = list(range(len(ref))) if subset is None else subset
    where = {i: first_difference(test[i], ref[i]) for i in subset}
    diverged = {i: d for i, d in where.items() if d is not None}
    positions = list(diverged.values())
    n = len(subset)
    return {
        "prompts": n,
        "identical": n - len(diverged),
        "identical_pct": round(100 * (n - len(diverged)) / n, 1) if n else None,
        "first_token_differs": sum(d == 0 for d in positions),
        "mean_first_divergence": round(statistics.mean(positions), 1) if positions else None,
        "median_first_divergence": statistics.median(positions) if positions else None,
        "diverged": {str(i): d for i, d in diverged.items()},  # prompt index -> first differing position
    }


def answer(tokenizer, tokens: list[int], eos: set[int]) -> str:
    shown = tokens[:-1] if tokens and tokens[-1] in eos else tokens
    return tokenizer.decode(shown, skip_special_tokens=True)


# ----------------------------------------------------------------------------- report


def identical(c: dict) -> str:
    return f"{c['identical']}/{c['prompts']} ({c['identical_pct']:.1f}%)"


def row(name: str, dtype: str, c: dict, vs_float32: dict | None = None, batched: str = "", alone: str = "") -> str:
    mean = "-" if c["mean_first_divergence"] is None else f"{c['mean_first_divergence']:.1f}"
    median = "-" if c["median_first_divergence"] is None else f"{c['median_first_divergence']:g}"
    truth = identical(vs_float32) if vs_float32 else "-"
    return (f"| {name} | {dtype} | {identical(c)} | {c['first_token_differs']} | {mean} | {median} | {truth} | "
            f"{batched} | {alone} |")


def table(results: list[dict]) -> str:
    lines = ["| run vs reference | dtype | identical tokens | first token differs | mean first divergence "
             "| median | identical to single float32 | \"What is the capital of France?\" in the batch | asked alone |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines += rows(r)
    return "\n".join(lines)


def rows(r: dict) -> list[str]:
    """A result's row, then one per replica that served prompts."""
    alone = "same" if r["france_alone"] == r["france"] else r["france_alone"]
    out = [row(r["name"], r["dtype"], r["agreement"], r.get("vs_float32"), r["france"].replace("|", "\\|"),
               alone.replace("|", "\\|"))]
    for k, c in enumerate(r.get("per_replica", [])):
        if c["prompts"]:
            out.append(row(f"└ replica {k}: {r['replicas'][k]}", r["dtype"], c))
    return out


def write(out: Path, args: argparse.Namespace, dtypes: list[str], names: list[str], machine: dict, seconds: int,
          results: list[dict]) -> None:
    report = {
        "args": {"prompts": args.prompts, "max_tokens": args.max_tokens, "dtypes": dtypes, "plans": names,
                 "split_replicas": args.split_replicas, "transformers": not args.no_hf},
        "host": machine,
        "prompts": PROMPTS[: args.prompts],
        "seconds": seconds,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"how many of the {len(PROMPTS)} prompts")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--plans", default=None, help="comma-separated: cpu-local, shipped plan names, JSON files "
                   "(default: every examples/plans/*.json and cpu-local)")
    p.add_argument("--split-replicas", action="store_true", help="also run each replica of a plan alone")
    p.add_argument("--no-hf", action="store_true", help="skip the transformers float32 reference")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    if not 1 <= args.prompts <= len(PROMPTS):
        p.error(f"--prompts must be 1..{len(PROMPTS)}")
    return args


def main() -> None:
    args = parse_args()
    dtypes = args.dtypes.split(",")
    names = args.plans.split(",") if args.plans else [*(p.stem.removeprefix("smollm2-") for p in
                                                         sorted(PLANS_DIR.glob("*.json"))), "cpu-local"]
    start, machine = time.time(), host()  # before the runs: others may commit while they last
    with LLM("smollm2", dtype="float32", num_kv_blocks=16) as probe:  # tokenizer and chat template only
        prompts = [probe.apply_chat_template([{"role": "user", "content": q}]) for q in PROMPTS[: args.prompts]]
        tokenizer, eos = probe.tokenizer, set(probe.eos_token_ids)
    results: list[dict] = []

    def record(name: str, dtype: str, test: Outcome, ref: Outcome, replicas: list[str], by_replica: bool) -> None:
        # A bfloat16 plan against float32 too: is it further from float32 than the single process is?
        truth = singles.get("float32") if dtype != "float32" and ref is not singles.get("float32") else None
        per = [compare(test.tokens, ref.tokens, [i for i, s in enumerate(test.served) if s == k])
               for k in range(len(replicas))] if by_replica and len(replicas) > 1 else []
        results.append({"name": name, "dtype": dtype, "agreement": compare(test.tokens, ref.tokens),
                        "france": answer(tokenizer, test.tokens[0], eos),
                        "france_alone": answer(tokenizer, test.alone, eos),
                        "france_alone_identical": test.alone == ref.alone,
                        "replicas": replicas, "served": test.served, "alone_served": test.alone_served,
                        "per_replica": per, "vs_float32": compare(test.tokens, truth.tokens) if truth else None})
        print("\n".join(rows(results[-1])), flush=True)
        write(args.out, args, dtypes, names, machine, round(time.time() - start), results)  # a crash keeps these

    singles = {d: single(d, prompts, args.max_tokens) for d in dtypes}
    whole = ["TP-1 layers 0-29, this process"]
    if "float32" in singles:
        if not args.no_hf:
            record("single vs transformers", "float32", singles["float32"], hf_greedy(prompts, args.max_tokens),
                   whole, False)
        if "bfloat16" in singles:
            record("single bfloat16 vs single float32", "bfloat16", singles["bfloat16"], singles["float32"], whole,
                   False)
    with tempfile.TemporaryDirectory() as scratch:
        for name, path in plan_files(names, Path(scratch)).items():
            plan = load_plan(path)
            layout = describe(plan)
            split = colocated(plan) and len(plan.replicas) > 1
            shares = " / ".join(f"{lay}, share {r.share:.2f}" for lay, r in zip(layout, plan.replicas, strict=True))
            title = shares if colocated(plan) else " -> ".join(layout)
            for d in dtypes:
                record(f"plan {name} ({title}) vs single", d, planned(plan, d, prompts, args.max_tokens),
                       singles[d], layout, split)
                if args.split_replicas and split:
                    for k in range(len(plan.replicas)):
                        record(f"plan {name}, replica {k} alone ({layout[k]}) vs single", d,
                               planned(alone(plan, k), d, prompts, args.max_tokens), singles[d], [layout[k]], False)
    print()
    print(f"host: {machine}")
    print(table(results))


if __name__ == "__main__":
    main()
