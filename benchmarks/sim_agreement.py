"""Planner vs simulator: does a plan, replayed under steady saturated load, deliver what its planner predicts?

    .venv/bin/python benchmarks/sim_agreement.py [--requests 6000] [--models llama-2-70b,opt-30b]
                                                 [--clusters h100x8,hetero-2,hetero-5] [--time-budget 2]

For each model, cluster and workload class: plan with HexGen (colocated) and HexGen-2 (disaggregated;
DistServe-style on the homogeneous h100x8), replay --requests requests drawn from the class of the Azure
trace (with replacement), all at time 0, and compare the simulated saturated output tokens/s (every entry
replica still has prompts queued: `metrics.saturated_tokens_per_s`) with the plan's prediction, for the
plan and for each colocated replica (tokens of the requests it served, over the same window; a
disaggregated replica runs below its capacity when the other side is the bottleneck, so only the plan's
total compares). Prints a table and writes benchmarks/results/sim_agreement.json; docs/simulator.md,
"Planner agreement", reads it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from paper_eval import plans  # the same two planners per cluster as the evaluation

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.plan import Plan
from hexserve.planner.workload import WORKLOAD_CLASSES, Workload
from hexserve.sim.metrics import saturated_window, summarize, tokens_by
from hexserve.sim.result import SimResult
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import load_workload

RESULTS = Path(__file__).parent / "results" / "sim_agreement.json"


def replica_rates(result: SimResult, plan: Plan) -> list[float]:
    """Output tokens/s of each replica over the saturated window (the requests it prefilled, for a
    colocated or prefill replica; decoded, for a decode replica); a prefill replica's is its requests/s."""
    done = result.completed
    first, finish, out, entry = result.first_token, result.finish, result.output, result.replica
    start, until = saturated_window(result)
    span = until - start
    decoder = result.decoder
    rates = []
    for i, r in enumerate(plan.replicas):
        if r.role == "prefill":
            rates.append(float(np.sum(done & (entry == i) & (first > start) & (first <= until))) / span)
        else:
            mine = done & ((decoder == i) if r.role == "decode" else (entry == i))
            f, e, o = first[mine], finish[mine], out[mine]
            rates.append((tokens_by(until, f, e, o) - tokens_by(start, f, e, o)) / span)
    return rates


def run(model, cluster, klass, cal, requests: int, budget: float) -> list[dict]:
    w = Workload(*WORKLOAD_CLASSES[klass], slo_tpot=0.2)
    trace = load_workload(f"azure-conv:{klass}")
    sample = trace.sample(requests, seed=0, with_replacement=True, keep_order=False).offline()
    rows = []
    for label, plan in plans(model, cluster, w, cal, budget):
        result = simulate(plan, cluster, model, sample, cal, router="shares")
        s = summarize(result)
        sim_rates = replica_rates(result, plan)
        replicas = [  # predicted: the replica's capacity (a disaggregated replica may carry less flow)
            {"role": r.role, "stages": len(r.stages), "micro_batch": r.predicted.micro_batch,
             "predicted": r.predicted.requests_per_s if r.role == "prefill" else r.predicted.tokens_per_s,
             "simulated": got, "unit": "req/s" if r.role == "prefill" else "tok/s"}
            for r, got in zip(plan.replicas, sim_rates, strict=True)
        ]
        rows.append({
            "model": model.name, "cluster": cluster.name, "class": klass, "planner": label,
            "predicted_tokens_per_s": plan.predicted.tokens_per_s, "simulated_tokens_per_s": s.saturated_tokens_per_s,
            "ratio": s.saturated_tokens_per_s / plan.predicted.tokens_per_s, "preemptions": s.preemptions,
            "replicas": replicas,
        })
        per = " ".join(f"{x['simulated'] / x['predicted']:.2f}" for x in replicas if x["role"] == "colocated")
        print(f"{model.name:<12}{cluster.name:<10}{klass:<6}{label:<10}{plan.predicted.tokens_per_s:>9.0f}"
              f"{s.saturated_tokens_per_s:>10.0f}{rows[-1]['ratio']:>7.2f}   {'replicas: ' + per if per else ''}",
              flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=6000)
    ap.add_argument("--models", default="llama-2-70b,opt-30b")
    ap.add_argument("--clusters", default="h100x8,hetero-2,hetero-5")
    ap.add_argument("--classes", default=",".join(WORKLOAD_CLASSES))
    ap.add_argument("--time-budget", type=float, default=2.0, help="seconds of HexGen-2 refinement per plan")
    args = ap.parse_args()
    cal, rows, t0 = load_calibration(), [], time.perf_counter()
    print(f"{'model':<12}{'cluster':<10}{'class':<6}{'planner':<10}{'pred':>9}{'sim':>10}{'ratio':>7}")
    for name in args.models.split(","):
        model = load_model(name)
        for c in args.clusters.split(","):
            cluster = load_cluster(c)
            for klass in args.classes.split(","):
                rows += run(model, cluster, klass, cal, args.requests, args.time_budget)
    ratios = [r["ratio"] for r in rows]
    summary = {"plans": len(rows), "min": min(ratios), "max": max(ratios), "median": statistics.median(ratios),
               "within_15pct": sum(abs(x - 1) <= 0.15 for x in ratios),
               "within_20pct": sum(abs(x - 1) <= 0.2 for x in ratios)}
    print(f"\n{len(rows)} plans: simulated / predicted saturated tokens/s {summary['min']:.2f}-{summary['max']:.2f} "
          f"(median {summary['median']:.2f}); within 15%: {summary['within_15pct']}, within 20%: "
          f"{summary['within_20pct']}; {time.perf_counter() - t0:.0f} s")
    RESULTS.write_text(json.dumps({"requests": args.requests, "router": "shares", "summary": summary,
                                   "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
