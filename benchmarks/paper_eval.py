"""The HexGen / HexGen-2 evaluation, simulated: heterogeneous clusters vs 8xH100 at the same price.

    .venv/bin/python benchmarks/paper_eval.py [--requests 400] [--classes HPLD,HPHD,LPHD,LPLD]
                                              [--models llama-2-70b,opt-30b] [--time-budget 3]
                                              [--sweep-clusters h100x8,hetero-2,hetero-5,hetero-70pct]
                                              [--sweep-fractions 0.25,0.5,0.75,1.0,1.5]

For each model and workload class: plan 8xH100 with HexGen (the best homogeneous colocated plan) and
the DistServe-style disaggregated baseline, and hetero-1..5 and hetero-70pct with HexGen (colocated)
and HexGen-2 (disaggregated); simulate each plan offline (all requests at once: throughput) and online
(Poisson at 75% of the plan's predicted peak: latency) on the same sampled requests of the class; keep
each cluster's better plan per metric; report ratios to the homogeneous best. Prints a table and
writes benchmarks/results/paper_eval.json.

SLO-attainment-vs-rate sweep: for the --sweep-clusters, every plan is replayed online (Poisson) at the
same absolute rates, fractions of the 8xH100 best predicted peak, so the curves are comparable across
clusters; a cluster's point is its better plan's attainment (TTFT <= 2 s and TPOT <= 0.2 s). One PNG per
model and class: benchmarks/results/paper_eval_attainment_<model>_<class>.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hexserve.costmodel.calibration import load_calibration
from hexserve.errors import SpecError
from hexserve.planner.disagg_baselines import distserve
from hexserve.planner.disagg_build import plan_from_evaluation
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.hexgen2 import plan_disaggregated
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import WORKLOAD_CLASSES, Workload
from hexserve.sim.metrics import summarize
from hexserve.sim.plots import attainment_vs_rate
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import load_workload

RESULTS = Path(__file__).parent / "results" / "paper_eval.json"
PLOTS = RESULTS.parent
CLUSTERS = ("h100x8", "hetero-1", "hetero-2", "hetero-3", "hetero-4", "hetero-5", "hetero-70pct")
ROUTER = "least-loaded"  # the same load-aware dispatch for every plan, baselines included
SLO_TPOT = 0.2


def plans(model, cluster, workload, cal, budget):
    """(label, plan) of the cluster's two planners; a planner that finds nothing is skipped."""
    out = []
    homogeneous = cluster.name == "h100x8"
    try:
        out.append(("hexgen" if not homogeneous else "homog-colocated", plan_colocated(model, cluster, workload, cal)))
    except SpecError:
        pass
    try:
        if homogeneous:
            table = CostTable(model, cluster, cal, workload)
            e = distserve(table)
            if e is not None and e.value > 0:
                out.append(("distserve", plan_from_evaluation(table, e, "distserve", 0)))
        else:
            out.append(("hexgen2", plan_disaggregated(model, cluster, workload, cal, 0, budget)))
    except SpecError:
        pass
    return out


def run_case(model, cluster, klass, cal, requests, budget, keep=None):
    """Rows for one cluster; when keep is a list, (cluster, label, plan) are appended to it for the sweep."""
    w = Workload(*WORKLOAD_CLASSES[klass], slo_tpot=SLO_TPOT)
    sample = load_workload(f"azure-conv:{klass}").sample(requests, seed=0)
    rows = []
    for label, plan in plans(model, cluster, w, cal, budget):
        if keep is not None:
            keep.append((cluster, label, plan))
        offline = summarize(simulate(plan, cluster, model, sample.offline(), cal, router=ROUTER))
        rate = 0.75 * plan.predicted.requests_per_s
        online = summarize(simulate(plan, cluster, model, sample.with_poisson_arrivals(rate, 0), cal, router=ROUTER))
        rows.append({
            "cluster": cluster.name, "price_per_hour": cluster.price_per_hour, "planner": label,
            "predicted_rps": plan.predicted.requests_per_s, "offline_rps": offline.requests_per_s,
            "offline_tokens_per_s": offline.saturated_tokens_per_s,
            "offline_makespan_tokens_per_s": offline.output_tokens_per_s, "online_rate": rate,
            "online_rps": online.requests_per_s, "online_mean_latency_s": online.e2e_s.mean,
            "online_mean_ttft_s": online.ttft_s.mean, "online_mean_tpot_s": online.tpot_s.mean,
            "online_attainment_1x": online.attainment[1.0], "preemptions": offline.preemptions + online.preemptions,
        })
        print(f"  {cluster.name:<13}{label:<17}pred {rows[-1]['predicted_rps']:6.2f}  "
              f"offline {offline.saturated_tokens_per_s:7.0f} tok/s  online {online.requests_per_s:5.2f} req/s "
              f"latency {online.e2e_s.mean:7.2f} s", flush=True)
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """Per cluster, its best throughput and best latency against the 8xH100 best."""
    by = lambda c: [r for r in rows if r["cluster"] == c]  # noqa: E731
    homog = by("h100x8")
    if not homog:
        return []
    base_tp = max(r["offline_tokens_per_s"] for r in homog)
    base_lat = min(r["online_mean_latency_s"] for r in homog)
    out = []
    for c in CLUSTERS[1:]:
        mine = by(c)
        if mine:
            tp = max(mine, key=lambda r: r["offline_tokens_per_s"])
            lat = min(mine, key=lambda r: r["online_mean_latency_s"])
            out.append({"cluster": c, "throughput_ratio": tp["offline_tokens_per_s"] / base_tp,
                        "best_tp": tp["planner"],
                        "latency_ratio": base_lat / lat["online_mean_latency_s"], "best_lat": lat["planner"]})
    return out


def sweep(model, klass, kept, homog_peak, fractions, cal, requests):
    """SLO attainment vs absolute rate (fractions of the 8xH100 best predicted peak), per cluster."""
    sample = load_workload(f"azure-conv:{klass}").sample(requests, seed=0)
    per_plan: dict[tuple[str, str], list[float]] = {}
    rates = [f * homog_peak for f in fractions]
    for cluster, label, plan in kept:
        per_plan[(cluster.name, label)] = [
            summarize(simulate(plan, cluster, model, sample.with_poisson_arrivals(rate, 1), cal,
                               router=ROUTER)).attainment[1.0]
            for rate in rates]
    clusters = [c for c in CLUSTERS if any(k[0] == c for k in per_plan)]
    curves = {c: [max(v[i] for k, v in per_plan.items() if k[0] == c) for i in range(len(rates))] for c in clusters}
    path = PLOTS / f"paper_eval_attainment_{model.name}_{klass}.png"
    attainment_vs_rate({c: list(zip(rates, v, strict=True)) for c, v in curves.items()}, path)
    return {"rates": rates, "fractions": list(fractions), "attainment": curves,
            "per_plan": {f"{c}/{lab}": v for (c, lab), v in per_plan.items()}, "plot": path.name}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--classes", default=",".join(WORKLOAD_CLASSES))
    ap.add_argument("--models", default="llama-2-70b,opt-30b")
    ap.add_argument("--time-budget", type=float, default=3.0, help="seconds of HexGen-2 refinement per plan")
    ap.add_argument("--sweep-clusters", default="h100x8,hetero-2,hetero-5,hetero-70pct",
                    help="clusters in the SLO-attainment-vs-rate sweep ('' for none)")
    ap.add_argument("--sweep-fractions", default="0.25,0.5,0.75,1.0,1.5",
                    help="sweep rates, as fractions of the 8xH100 best predicted peak")
    args = ap.parse_args()
    sweep_clusters = [c for c in args.sweep_clusters.split(",") if c]
    fractions = [float(f) for f in args.sweep_fractions.split(",") if f]
    cal, results, t0 = load_calibration(), [], time.perf_counter()
    for name in args.models.split(","):
        model = load_model(name)
        for klass in args.classes.split(","):
            print(f"{model.name} {klass}  ({time.perf_counter() - t0:.0f} s)", flush=True)
            rows, kept = [], []
            for c in CLUSTERS:
                rows += run_case(model, load_cluster(c), klass, cal, args.requests, args.time_budget,
                                 kept if c in sweep_clusters else None)
            entry = {"model": model.name, "class": klass, "runs": rows, "ratios": ratios(rows)}
            homog = [r["predicted_rps"] for r in rows if r["cluster"] == "h100x8"]
            if kept and fractions and homog:
                entry["sweep"] = sweep(model, klass, kept, max(homog), fractions, cal, args.requests)
            results.append(entry)
            RESULTS.write_text(json.dumps({"requests": args.requests, "router": ROUTER,
                                           "time_budget_s": args.time_budget, "models": args.models,
                                           "sweep_clusters": sweep_clusters, "results": results},
                                          indent=2) + "\n")
    print(f"\n{'model':<13}{'class':<6}{'cluster':<14}{'tput x':>8}{'by':>10}{'latency x':>11}{'by':>10}")
    for res in results:
        for r in res["ratios"]:
            print(f"{res['model']:<13}{res['class']:<6}{r['cluster']:<14}{r['throughput_ratio']:>8.2f}{r['best_tp']:>10}"
                  f"{r['latency_ratio']:>11.2f}{r['best_lat']:>10}")
    for res in results:
        sw = res.get("sweep")
        if sw:
            print(f"\n{res['model']} {res['class']} SLO attainment (%) vs rate (x 8xH100 best peak = "
                  f"{sw['rates'][-1] / sw['fractions'][-1]:.2f} req/s)")
            print(f"{'cluster':<14}" + "".join(f"{f:>7.2f}" for f in sw["fractions"]))
            for c, v in sw["attainment"].items():
                print(f"{c:<14}" + "".join(f"{100 * a:>7.0f}" for a in v))
    print(f"wrote {RESULTS} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
