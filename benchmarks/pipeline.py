"""Distributed runtime on SmolLM2-135M: the same requests through the single-process engine and through
plans of worker processes (pipeline, asymmetric TP+PP, tensor parallel), with 1 vs 2 micro-batches in flight.
(TP-2 cannot run: SmolLM2's 9 heads do not split over 2 ranks; TP-3 is its only TP degree under 9.)

    .venv/bin/python benchmarks/pipeline.py [--quick] [--requests 16] [--output-tokens 48] [--rounds 2]
                                            [--two-threads] [--cuda]

Requests: prompt lengths drawn from the Azure LLM conversation trace (2023), keeping prompts of 100-300
tokens, filled with fixed random token ids; every request generates exactly --output-tokens tokens
(greedy, ignore_eos). Per configuration: worker start-up (constructing the LLM: spawn, load shards,
allocate KV), wall time and output tokens/s of all requests queued at once after a short warm-up (the
fastest of --rounds runs; configurations of one group, e.g. a plan with 1 and 2 micro-batches, are all
started first and their runs interleaved in ABBA order, so that the machine's drifting load hits them alike),
whether the greedy tokens equal the single-process engine's, and each stage's mean step time split into
compute, TP communication and PP transfer (from the executor's per-worker timings).

On CPU every plan device is a worker process with one thread (gloo). This machine has 2 cores: four
workers time-share them, so PP/TP here show correctness and overheads, not speedups. A worker's "TP"
time includes waiting for slower (descheduled) TP peers; "PP" is the receive-wait for the previous
stage (idle time while it computes, included) plus posting the sends to the next stage.

With a CUDA GPU (and --cuda) a TP-1 plan runs there too, and a 2-stage plan when there are 2 GPUs.
Last, the gloo floor: all-reduce among 3 bare processes and send between 2, of a decode and a prefill
step's hidden states (what TP/PP communication costs on these cores without the runtime around it).
Prints a table, writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from hexserve.planner.plan import Plan, Replica, Stage, load_plan
from hexserve.runtime.engine import LLM
from hexserve.runtime.sampling import SamplingParams
from hexserve.specs.workload import load_workload

ROOT = Path(__file__).resolve().parents[1]
ASYM = ROOT / "examples/plans/smollm2-asym.json"
CAVEAT = ("This machine has {cores} CPU cores: several single-thread worker processes time-share them, so PP/TP "
          "here demonstrate correctness and overheads, not speedups.")


# ----------------------------------------------------------------------------- inputs


def make_requests(n: int, output_tokens: int, vocab: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """n prompts with Azure-trace lengths of 100-300 tokens, random ids (fixed by seed)."""
    trace = load_workload("azure-conv")
    few_hundred = [r.prompt_len for r in trace.requests if 100 <= r.prompt_len <= 300]
    rng = np.random.default_rng(seed)
    lengths = [int(x) for x in rng.choice(few_hundred, size=n, replace=False)]
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(100, vocab, (p,), generator=g).tolist() for p in lengths]
    return prompts, [output_tokens] * n


def one_replica(base: Plan, *stages: tuple[tuple[int, ...], int, int]) -> Plan:
    """base with one colocated replica of the given stages: (devices, first layer, end layer)."""
    built = tuple(Stage(devices=d, tp=len(d), layers=(a, b)) for d, a, b in stages)
    return dataclasses.replace(base, replicas=(Replica(role="colocated", stages=built, share=1.0),),
                               planner="hand-written", predicted=None, notes=())


def configurations(args, layers: int) -> list[list[dict]]:
    """Groups of configurations compared side by side. Each: name, plan (None: the single-process engine),
    micro_batches, threads (the single process's), device."""
    asym = load_plan(ASYM)
    half = layers // 2
    pp2 = one_replica(asym, ((0,), 0, half), ((1,), half, layers))
    tp3 = one_replica(asym, ((0, 1, 2), 0, layers))
    pp = f"PP-2 {half}/{layers - half}"
    groups = [
        [{"name": "single process, 1 thread", "plan": None, "mb": 1, "threads": 1}]
        + ([{"name": "single process, 2 threads", "plan": None, "mb": 1, "threads": 2}] if args.two_threads else []),
        [{"name": f"{pp}, mb 1", "plan": pp2, "mb": 1}, {"name": f"{pp}, mb 2", "plan": pp2, "mb": 2}],
        [{"name": "asym TP-3 + TP-1, mb 1", "plan": asym, "mb": 1},
         {"name": "asym TP-3 + TP-1, mb 2", "plan": asym, "mb": 2}],
        [{"name": "TP-3", "plan": tp3, "mb": 1}],
    ]
    if args.only:  # the 1-thread baseline always runs
        keep = [k.strip() for k in args.only.split(",")]
        groups = [groups[0][:1]] + [[c for c in g if any(k in c["name"] for k in keep)] for g in groups[1:]]
    if args.cuda and torch.cuda.is_available():
        tp1 = one_replica(asym, ((0,), 0, layers))
        groups.append([{"name": "cuda: single process", "plan": None, "mb": 1, "device": "cuda"},
                       {"name": "cuda: TP-1 plan", "plan": tp1, "mb": 1, "device": "cuda"}])
        if torch.cuda.device_count() >= 2:
            groups.append([{"name": f"cuda: {pp}, mb 1", "plan": pp2, "mb": 1, "device": "cuda"},
                           {"name": f"cuda: {pp}, mb 2", "plan": pp2, "mb": 2, "device": "cuda"}])
    return [g for g in groups if g]


# ----------------------------------------------------------------------------- one configuration


def snapshot(llm: LLM) -> dict[int, list[float]] | None:
    """Replica 0's per-worker timings so far (None for the single-process engine)."""
    executor = llm.replicas[0].executor
    timings = getattr(executor, "timings", None)
    return {rank: list(t) for rank, t in timings.items()} if timings is not None else None


def stage_split(llm: LLM, end: dict, begin: dict | None = None) -> list[dict]:
    """Per stage of replica 0, the timings between two snapshots: mean per step over the stage's ranks of
    total, compute (total - TP - PP), TP comm and PP transfer, in ms."""
    executor = llm.replicas[0].executor
    by_stage: dict[int, list[list[float]]] = {}
    for w in executor.workers:
        zero = [0] * len(end[w.spec.rank])
        steps, total, tp, pp = (a - b for a, b in zip(end[w.spec.rank][:4], (begin or {}).get(w.spec.rank, zero)[:4],
                                                      strict=True))
        if steps:
            by_stage.setdefault(w.spec.stage, []).append([total / steps, tp / steps, pp / steps, steps])
    out = []
    for stage, rows in sorted(by_stage.items()):
        total, tp, pp, steps = (float(np.mean(c)) for c in zip(*rows, strict=True))
        spec = next(w.spec for w in executor.workers if w.spec.stage == stage)
        out.append({"stage": stage, "layers": list(spec.layers), "tp": spec.tp_size, "steps": int(steps),
                    "total_ms": round(total * 1e3, 2), "compute_ms": round((total - tp - pp) * 1e3, 2),
                    "tp_comm_ms": round(tp * 1e3, 2), "pp_transfer_ms": round(pp * 1e3, 2),
                    "per_rank_total_tp_pp_ms": [[round(v * 1e3, 2) for v in r[:3]] for r in rows]})
    return out


def timed_run(llm: LLM, prompts, params) -> dict:
    """Every request queued at once, stepped to the end (what `generate` does), noting when the last
    prompt has been prefilled: the prefill phase, then the decode phase."""
    requests = [llm.add_request(p, sp) for p, sp in zip(prompts, params, strict=True)]
    refused = [r.error for r in requests if r.seq is None]
    if refused:
        raise RuntimeError(f"request refused: {refused[0]}")
    begin, steps0 = snapshot(llm), llm.num_steps
    start = time.perf_counter()
    prefilled = None
    while llm.has_work():
        llm.step()
        if prefilled is None and all(r.seq.num_computed_tokens >= len(r.prompt_token_ids) for r in requests):
            prefilled = (time.perf_counter(), snapshot(llm), sum(len(r.seq.output_ids) for r in requests),
                         llm.num_steps)
    end = time.perf_counter()
    outs = [llm.output(r) for r in requests]
    return {"begin": begin, "start": start, "prefilled": prefilled, "end": end, "end_timings": snapshot(llm),
            "outs": outs, "leader_steps": llm.num_steps - steps0, "leader_steps_end": llm.num_steps}


def new_row(cfg: dict) -> dict:
    row = {"name": cfg["name"], "micro_batches": cfg["mb"], "device": cfg.get("device") or "cpu",
           "workers": 0 if cfg["plan"] is None else len(cfg["plan"].replicas[0].devices),
           "leader_threads": cfg.get("threads", 1), "walls_s": []}
    if cfg["plan"] is not None:
        row["stages"] = [{"devices": list(s.devices), "tp": s.tp, "layers": list(s.layers)}
                         for s in cfg["plan"].replicas[0].stages]
    return row


def start_llm(cfg: dict, prompts, blocks: int, shared: LLM | None) -> tuple[LLM, float]:
    """The configuration's LLM and its start-up seconds; the single-process rows share one engine."""
    if cfg["plan"] is None and shared is not None:
        return shared, 0.0
    kwargs = {"max_num_seqs": len(prompts), "num_kv_blocks": blocks, "step_timeout_s": 600.0}
    if cfg.get("device"):
        kwargs["device"] = cfg["device"]
    torch.set_num_threads(cfg.get("threads", 1))
    start = time.perf_counter()
    if cfg["plan"] is None:
        llm = LLM("smollm2", **kwargs)
    else:
        llm = LLM(plan=cfg["plan"], micro_batches=cfg["mb"], **kwargs)
    seconds = time.perf_counter() - start
    llm.generate([p[:32] for p in prompts[:2]], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True))
    return llm, seconds


def record(row: dict, llm: LLM, run: dict, outputs: list[int], plan: bool) -> None:
    """Fill the row from one timed run (the fastest of its rounds)."""
    wall = run["end"] - run["start"]
    t_pre, timings_pre, tokens_pre, steps_pre = run["prefilled"]
    decode_s = run["end"] - t_pre
    row.update(wall_s=round(wall, 2), output_tokens_per_s=round(sum(outputs) / wall, 2),
               prefill_phase_s=round(t_pre - run["start"], 2), decode_phase_s=round(decode_s, 2),
               decode_tokens_per_s=round((sum(outputs) - tokens_pre) / decode_s, 2),
               leader_steps=run["leader_steps"], decode_leader_steps=run["leader_steps_end"] - steps_pre)
    if plan:
        row["per_stage_all"] = stage_split(llm, run["end_timings"], run["begin"])
        row["per_stage_prefill"] = stage_split(llm, timings_pre, run["begin"])
        row["per_stage_decode"] = stage_split(llm, run["end_timings"], timings_pre)


def run_group(cfgs: list[dict], prompts, outputs, blocks: int, rounds: int) -> list[dict]:
    """Configurations compared side by side: all started, then their timed runs interleaved round by
    round (ABBA order), each keeping its fastest round. Greedy tokens of every round are kept."""
    rows = [new_row(c) for c in cfgs]
    llms: list[LLM | None] = [None] * len(cfgs)
    params = [SamplingParams(max_tokens=o, temperature=0, ignore_eos=True) for o in outputs]
    try:
        shared = None
        for i, cfg in enumerate(cfgs):
            print(f"  starting {cfg['name']} ...", file=sys.stderr, flush=True)
            try:
                llms[i], seconds = start_llm(cfg, prompts, blocks, shared)
                rows[i]["startup_s"] = round(seconds, 2) if seconds else rows[0].get("startup_s")
                shared = llms[i] if cfg["plan"] is None else shared
            except Exception as e:  # a crash is a result: record it, go on
                rows[i]["error"] = f"start: {type(e).__name__}: {e}"
        for r in range(rounds):
            for i in (range(len(cfgs)) if r % 2 == 0 else reversed(range(len(cfgs)))):
                cfg, row, llm = cfgs[i], rows[i], llms[i]
                if llm is None or "error" in row:
                    continue
                torch.set_num_threads(cfg.get("threads", 1))  # plans: the leader only schedules
                try:
                    run = timed_run(llm, prompts, params)
                except Exception as e:
                    row["error"] = f"run: {type(e).__name__}: {e}"
                    continue
                errors = [o.error for o in run["outs"] if o.error]
                tokens = [o.token_ids for o in run["outs"]]
                if errors or [len(t) for t in tokens] != outputs:
                    row["error"] = errors[0] if errors else "a request did not generate all its output tokens"
                    continue
                wall = run["end"] - run["start"]
                row["walls_s"].append(round(wall, 2))
                row.setdefault("round_tokens", []).append(tokens)
                print(f"    {cfg['name']}, round {r + 1}: {wall:.1f} s", file=sys.stderr, flush=True)
                if "wall_s" not in row or wall < row["wall_s"]:
                    record(row, llm, run, outputs, cfg["plan"] is not None)
    finally:
        for llm in {id(x): x for x in llms if x is not None}.values():
            llm.shutdown()
    return rows


# ----------------------------------------------------------------------------- gloo floor


def _floor_worker(rank: int, world: int, port: int, shapes: list[tuple[int, int]], queue) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    out = {}
    for rows, hidden in shapes:
        x = torch.ones(rows, hidden)
        reps = max(5, min(200, 2_000_000 // x.numel()))
        dist.barrier()
        start = time.perf_counter()
        for _ in range(reps):
            dist.all_reduce(x)
        out[f"all_reduce_{world}_ranks_{rows}x{hidden}_us"] = round((time.perf_counter() - start) / reps * 1e6, 1)
        dist.barrier()
        start = time.perf_counter()
        for _ in range(reps):  # 0 -> 1, as a stage boundary of TP-1 stages
            if rank == 0:
                dist.send(x, 1)
            elif rank == 1:
                dist.recv(x, 0)
        dist.barrier()
        out[f"send_{rows}x{hidden}_us"] = round((time.perf_counter() - start) / reps * 1e6, 1)
    if rank == 0:
        queue.put(out)
    dist.destroy_process_group()


def gloo_floor(shapes: list[tuple[int, int]], world: int = 3) -> dict:
    """Microseconds per gloo all-reduce among `world` idle single-thread processes, and per send between
    two, of hidden-state tensors: what TP and PP communication cost without the runtime around them
    (still on the same 2 shared cores)."""
    ctx = mp.get_context("spawn")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    queue = ctx.Queue()
    procs = [ctx.Process(target=_floor_worker, args=(r, world, port, shapes, queue), daemon=True)
             for r in range(world)]
    for proc in procs:
        proc.start()
    try:
        return queue.get(timeout=300)
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# ----------------------------------------------------------------------------- report


def split_text(stages: list[dict]) -> str:
    return " | ".join(f"s{s['stage']} ({s['steps']} steps): {s['total_ms']:.0f} = {s['compute_ms']:.0f} + "
                      f"{s['tp_comm_ms']:.0f} + {s['pp_transfer_ms']:.0f}" for s in stages)


def print_table(rows: list[dict], baseline: dict | None) -> None:
    head = (f"{'configuration':<32} {'workers':>7} {'start s':>7} {'wall s':>7} {'out tok/s':>9} {'vs 1t':>6} "
            f"{'prefill s':>9} {'decode tok/s':>12} {'same':>6}  rounds' wall s")
    print(head)
    print("-" * len(head))
    base_tps = baseline.get("output_tokens_per_s") if baseline else None
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<32} {r['workers'] or '-':>7} ERROR: {r['error']}")
            continue
        ratio = f"{r['output_tokens_per_s'] / base_tps:.2f}x" if base_tps else "-"
        print(f"{r['name']:<32} {r['workers'] or '-':>7} {r['startup_s']:>7.1f} {r['wall_s']:>7.1f} "
              f"{r['output_tokens_per_s']:>9.1f} {ratio:>6} {r['prefill_phase_s']:>9.1f} "
              f"{r['decode_tokens_per_s']:>12.1f} {r.get('same_tokens_as_single', '-'):>6}  "
              f"{' / '.join(f'{w:.1f}' for w in r['walls_s'])}")
    print("\nPer-step time (ms, mean per step over each stage's ranks): total = compute + TP comm + PP transfer")
    for r in rows:
        if "per_stage_all" not in r:
            continue
        for phase in ("prefill", "decode"):
            print(f"  {r['name']:<32} {phase:<8} {split_text(r[f'per_stage_{phase}'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="4 requests of 24 output tokens, 1 round (about 2-3 minutes)")
    ap.add_argument("--two-threads", action="store_true", help="also the single-process engine with 2 threads "
                    "(slow and erratic when other processes load the 2 cores)")
    ap.add_argument("--rounds", type=int, default=None, help="timed runs per configuration, best kept (default 2, "
                    "--quick: 1)")
    ap.add_argument("--requests", type=int, default=None, help="default 16 (--quick: 4)")
    ap.add_argument("--output-tokens", type=int, default=None, help="default 48 (--quick: 24)")
    ap.add_argument("--cuda", action="store_true", help="also run a TP-1 (and with 2 GPUs a PP-2) plan on CUDA")
    ap.add_argument("--only", default="", help="comma-separated name parts: run only those plans (e.g. 'PP-2')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/pipeline.json"))
    args = ap.parse_args()
    n = args.requests or (4 if args.quick else 16)
    n_out = args.output_tokens or (24 if args.quick else 48)
    args.rounds = args.rounds or (1 if args.quick else 2)

    from hexserve.runtime.config import load_config
    from hexserve.runtime.tokenizer import resolve_checkpoint

    spec = load_config(resolve_checkpoint("smollm2")).spec
    prompts, outputs = make_requests(n, n_out, spec.vocab_size, args.seed)
    block_size = 16
    blocks = 2 * sum(-(-(len(p) + o) // block_size) for p, o in zip(prompts, outputs, strict=True)) + 16
    cores = os.cpu_count()
    caveat = CAVEAT.format(cores=cores)
    print(f"{n} requests: prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens "
          f"({sum(map(len, prompts))} in all, Azure conversation trace lengths, random ids), {n_out} output tokens "
          f"each (greedy, ignore_eos); SmolLM2-135M float32; {blocks} KV blocks of {block_size}. "
          f"Load average at start: {os.getloadavg()[0]:.1f}.", flush=True)
    print(caveat, flush=True)

    started, load_start = time.perf_counter(), os.getloadavg()[0]
    rows: list[dict] = []
    for group in configurations(args, spec.num_layers):
        rows += run_group(group, prompts, outputs, blocks, args.rounds)
    print("  gloo floor ...", file=sys.stderr, flush=True)
    prefill_rows = min(2048, sum(map(len, prompts)))
    floor = gloo_floor([(n, spec.hidden_size), (prefill_rows, spec.hidden_size)])
    reference = rows[0].get("round_tokens", [None])[0]
    for row in rows:
        rounds = row.pop("round_tokens", [])
        if reference is not None and rounds:
            same = min(sum(a == b for a, b in zip(tokens, reference, strict=True)) for tokens in rounds)
            row["same_tokens_as_single"] = f"{same}/{len(reference)}"
    baseline = rows[0] if "error" not in rows[0] else None
    print()
    print_table(rows, baseline)
    reduce_us = floor[f"all_reduce_3_ranks_{n}x{spec.hidden_size}_us"]
    print(f"\ngloo floor (bare single-thread processes on the same cores, no model): all-reduce of a decode step's "
          f"[{n} x {spec.hidden_size}] among 3 ranks {reduce_us:.0f} us (TP-3 does 2 per layer: "
          f"{2 * spec.num_layers * reduce_us / 1e3:.0f} ms per {spec.num_layers}-layer step), send of it "
          f"{floor[f'send_{n}x{spec.hidden_size}_us']:.0f} us; of a prefill step's [{prefill_rows} x "
          f"{spec.hidden_size}]: all-reduce {floor[f'all_reduce_3_ranks_{prefill_rows}x{spec.hidden_size}_us']:.0f} "
          f"us, send {floor[f'send_{prefill_rows}x{spec.hidden_size}_us']:.0f} us.")
    print(f"\n'start s': constructing the LLM (spawn the workers, load their shards, allocate KV). 'vs 1t': output "
          f"tokens/s over the single-process engine with 1 thread. 'prefill s': until every prompt is prefilled; "
          f"'decode tok/s': tokens after that over the time after that. 'same': requests whose greedy tokens equal "
          f"the single-process engine's. Per-step split: a worker's step runs from its arrival to its end; TP comm "
          f"includes waiting for descheduled TP peers; PP transfer is the wait for the previous stage (its compute "
          f"included) plus posting the sends to the next.\n{caveat}")
    result = {
        "model": "smollm2 (SmolLM2-135M)", "dtype": "float32", "machine": platform.processor() or platform.machine(),
        "cpu_cores": cores, "torch": torch.__version__, "requests": n, "output_tokens_each": n_out,
        "prompt_lengths": [len(p) for p in prompts], "kv_blocks": blocks, "block_size": block_size,
        "seed": args.seed, "rounds": args.rounds, "load_average_start": round(load_start, 2),
        "total_runtime_s": round(time.perf_counter() - started, 1), "caveat": caveat, "results": rows,
        "gloo_floor_us": floor, "load_average_end": round(os.getloadavg()[0], 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out} ({result['total_runtime_s']:.0f} s)")


if __name__ == "__main__":
    main()
