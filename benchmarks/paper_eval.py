"""The HexGen / HexGen-2 evaluation, simulated: heterogeneous clusters vs 8xH100 at the same price.

    .venv/bin/python benchmarks/paper_eval.py [--quick] [--requests 5000] [--seeds 3] [--jobs 2]
                                              [--classes HPLD,HPHD,LPHD,LPLD] [--models llama-2-70b,opt-30b]
                                              [--time-budget 25] [--sweep-fractions 0.25,0.5,0.75,1.0,1.5]
                                              [--sweep-clusters h100x8,hetero-2,hetero-5,hetero-70pct]

For each model and workload class: plan 8xH100 with HexGen (the best homogeneous colocated plan) and
the DistServe-style disaggregated baseline, and hetero-1..5 and hetero-70pct with HexGen (colocated)
and HexGen-2 (disaggregated). For each seed, draw --requests requests from the class of the Azure trace
(with replacement where the class has fewer; in random order, so that the trace's drift over the day does
not show up as a trend), and simulate each plan offline (all at once: saturated output tokens/s, see
docs/simulator.md) and online (Poisson at 75% of the plan's predicted peak: mean end-to-end latency).
Each cluster keeps its better plan per metric (by the mean over seeds); the ratios to the 8xH100 best are
reported as the mean over seeds and their spread (min-max). Prints a table and writes
benchmarks/results/paper_eval.json (paper_eval_quick.json and no plots with --quick).

SLO-attainment-vs-rate sweep: for the --sweep-clusters, every plan is replayed online (Poisson, seed 0)
at the same absolute rates, fractions of the 8xH100 best predicted peak, so the curves are comparable
across clusters; a cluster's point is its better plan's attainment (TTFT <= 2 s and TPOT <= 0.2 s). One
PNG per model and class: benchmarks/results/paper_eval_attainment_<model>_<class>.png.

HexGen-2's refinement runs to its own evaluation budget (the planner's default; the time budget is only a
safety net), so plans do not depend on the machine's load. --quick: 600 requests (too few to saturate the
light-prompt classes: a smoke test), one seed, 1 s of HexGen-2 refinement, the sweep on h100x8 and hetero-5
at three rates (about 2 minutes). Each (model, class, cluster) runs as one task in --jobs processes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path

from hexserve.costmodel.calibration import load_calibration
from hexserve.errors import SpecError
from hexserve.planner.disagg_baselines import distserve
from hexserve.planner.disagg_build import plan_from_evaluation
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.hexgen2 import TIME_BUDGET_S, plan_disaggregated
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import WORKLOAD_CLASSES, Workload
from hexserve.sim.metrics import summarize
from hexserve.sim.plots import attainment_vs_rate
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import load_workload

RESULTS = Path(__file__).parent / "results"
CLUSTERS = ("h100x8", "hetero-1", "hetero-2", "hetero-3", "hetero-4", "hetero-5", "hetero-70pct")
ROUTER = "least-loaded"  # the same load-aware dispatch for every plan, baselines included
SLO_TPOT = 0.2
ONLINE_LOAD = 0.75  # of each plan's predicted peak: HexGen-2's online setting


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


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0}


def run_plan(model, cluster, plan, samples, cal) -> dict:
    """Offline and online runs of one plan, one per seed's sample."""
    per_seed = []
    for seed, sample in enumerate(samples):
        offline = summarize(simulate(plan, cluster, model, sample.offline(), cal, router=ROUTER))
        rate = ONLINE_LOAD * plan.predicted.requests_per_s
        online = summarize(simulate(plan, cluster, model, sample.with_poisson_arrivals(rate, seed), cal,
                                    router=ROUTER))
        per_seed.append({
            "offline_tokens_per_s": offline.saturated_tokens_per_s,
            "offline_makespan_tokens_per_s": offline.output_tokens_per_s, "online_rps": online.requests_per_s,
            "online_mean_latency_s": online.e2e_s.mean, "online_p90_latency_s": online.e2e_s.p90,
            "online_mean_ttft_s": online.ttft_s.mean, "online_mean_tpot_s": online.tpot_s.mean,
            "online_attainment_1x": online.attainment[1.0], "preemptions": offline.preemptions + online.preemptions,
        })
    keys = per_seed[0].keys()
    return {k: _spread([s[k] for s in per_seed]) for k in keys} | {"per_seed": per_seed}


def _samples(klass: str, requests: int, seeds: int) -> tuple[int, list]:
    trace = load_workload(f"azure-conv:{klass}")
    return len(trace.requests), [trace.sample(requests, seed=s, with_replacement=True, keep_order=False)
                                 for s in range(seeds)]


def run_case(task: tuple) -> dict:
    """One model, class and cluster: its plans and their runs; the plans come back for the sweep."""
    name, klass, cluster_name, args = task
    began = time.process_time()
    cal, model, cluster = load_calibration(), load_model(name), load_cluster(cluster_name)
    _, samples = _samples(klass, args.requests, args.seeds)
    found = plans(model, cluster, Workload(*WORKLOAD_CLASSES[klass], slo_tpot=SLO_TPOT), cal, args.time_budget)
    planned = time.process_time()
    rows = []
    for label, plan in found:
        runs = run_plan(model, cluster, plan, samples, cal)
        predicted = plan.predicted.tokens_per_s
        rows.append({
            "cluster": cluster.name, "price_per_hour": cluster.price_per_hour, "planner": label,
            "predicted_rps": plan.predicted.requests_per_s, "predicted_tokens_per_s": predicted,
            "simulated_over_predicted": runs["offline_tokens_per_s"]["mean"] / predicted,
            "online_rate": ONLINE_LOAD * plan.predicted.requests_per_s, **runs,
        })
        print(f"  {model.name:<12}{klass:<6}{cluster.name:<13}{label:<16}pred {predicted:7.0f} tok/s  "
              f"offline {runs['offline_tokens_per_s']['mean']:7.0f} ({rows[-1]['simulated_over_predicted']:.2f})  "
              f"online latency {runs['online_mean_latency_s']['mean']:7.2f} s", flush=True)
    return {"key": (name, klass, cluster_name), "rows": rows, "plans": found,
            "plan_cpu_s": planned - began, "sim_cpu_s": time.process_time() - planned}


def ratios(rows: list[dict]) -> list[dict]:
    """Per cluster, its best throughput and best latency (by the mean over seeds) against the 8xH100 best,
    seed by seed: mean and spread of the ratios."""
    by = lambda c: [r for r in rows if r["cluster"] == c]  # noqa: E731
    homog = by("h100x8")
    if not homog:
        return []
    base_tp = max(homog, key=lambda r: r["offline_tokens_per_s"]["mean"])
    base_lat = min(homog, key=lambda r: r["online_mean_latency_s"]["mean"])
    seeds = range(len(base_tp["per_seed"]))
    out = []
    for c in CLUSTERS[1:]:
        mine = by(c)
        if not mine:
            continue
        tp = max(mine, key=lambda r: r["offline_tokens_per_s"]["mean"])
        lat = min(mine, key=lambda r: r["online_mean_latency_s"]["mean"])
        tp_ratio = [tp["per_seed"][s]["offline_tokens_per_s"] / base_tp["per_seed"][s]["offline_tokens_per_s"]
                    for s in seeds]
        lat_ratio = [base_lat["per_seed"][s]["online_mean_latency_s"] / lat["per_seed"][s]["online_mean_latency_s"]
                     for s in seeds]
        out.append({"cluster": c, "throughput_ratio": _spread(tp_ratio), "best_tp": tp["planner"],
                    "latency_ratio": _spread(lat_ratio), "best_lat": lat["planner"],
                    "homog_best_tp": base_tp["planner"], "homog_best_lat": base_lat["planner"]})
    return out


def run_sweep(task: tuple) -> dict:
    """One model, class and sweep cluster: SLO attainment of each of its plans at the sweep's rates."""
    name, klass, cluster_name, found, rates, args = task
    began = time.process_time()
    cal, model, cluster = load_calibration(), load_model(name), load_cluster(cluster_name)
    _, samples = _samples(klass, args.requests, 1)
    attained = {
        label: [summarize(simulate(plan, cluster, model, samples[0].with_poisson_arrivals(rate, 0), cal,
                                   router=ROUTER)).attainment[1.0] for rate in rates]
        for label, plan in found
    }
    return {"key": (name, klass, cluster_name), "attainment": attained, "cpu_s": time.process_time() - began}


def sweep_entry(done: list[dict], rates: list[float], fractions: list[float], plot_name: str | None) -> dict:
    """A cluster's point is its better plan's attainment; one PNG per model and class (none if no name)."""
    per_plan = {(d["key"][2], label): v for d in done for label, v in d["attainment"].items()}
    clusters = [c for c in CLUSTERS if any(k[0] == c for k in per_plan)]
    curves = {c: [max(v[i] for k, v in per_plan.items() if k[0] == c) for i in range(len(rates))] for c in clusters}
    if plot_name:
        attainment_vs_rate({c: list(zip(rates, v, strict=True)) for c, v in curves.items()}, RESULTS / plot_name)
    return {"rates": rates, "fractions": list(fractions), "attainment": curves,
            "per_plan": {f"{c}/{lab}": v for (c, lab), v in per_plan.items()}, "plot": plot_name}


def _pool_map(fn, tasks: list, jobs: int) -> list:
    if jobs <= 1:
        return [fn(t) for t in tasks]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        return list(pool.imap_unordered(fn, tasks))


def _cell(spread: dict) -> str:
    return f"{spread['mean']:.2f} [{spread['min']:.2f}-{spread['max']:.2f}]"


def print_tables(results: list[dict]) -> None:
    head = f"{'tput x [seeds]':>20}{'by':>9}{'latency x [seeds]':>20}{'by':>9}"
    print(f"\n{'model':<13}{'class':<6}{'cluster':<14}{head}")
    for res in results:
        for r in res["ratios"]:
            print(f"{res['model']:<13}{res['class']:<6}{r['cluster']:<14}{_cell(r['throughput_ratio']):>20}"
                  f"{r['best_tp']:>9}{_cell(r['latency_ratio']):>20}{r['best_lat']:>9}")
    agree = [r["simulated_over_predicted"] for res in results for r in res["runs"]]
    print(f"\nsimulated / predicted saturated throughput over {len(agree)} plans: {min(agree):.2f}-{max(agree):.2f} "
          f"(median {statistics.median(agree):.2f})")
    for res in results:
        sw = res.get("sweep")
        if sw:
            print(f"\n{res['model']} {res['class']} SLO attainment (%) vs rate (x 8xH100 best peak = "
                  f"{sw['rates'][-1] / sw['fractions'][-1]:.2f} req/s)")
            print(f"{'cluster':<14}" + "".join(f"{f:>7.2f}" for f in sw["fractions"]))
            for c, v in sw["attainment"].items():
                print(f"{c:<14}" + "".join(f"{100 * a:>7.0f}" for a in v))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a short run: 600 requests, one seed, a small sweep")
    ap.add_argument("--requests", type=int, default=None, help="requests per class and seed (default 5000)")
    ap.add_argument("--seeds", type=int, default=None, help="workload samples per class (default 3)")
    ap.add_argument("--classes", default=",".join(WORKLOAD_CLASSES))
    ap.add_argument("--models", default="llama-2-70b,opt-30b")
    ap.add_argument("--time-budget", type=float, default=None,
                    help=f"seconds of HexGen-2 refinement per plan (default {TIME_BUDGET_S:g}: a safety net, the "
                         "refinement's own evaluation budget ends it first, deterministically)")
    ap.add_argument("--sweep-clusters", default=None,
                    help="clusters in the SLO-attainment-vs-rate sweep ('' for none)")
    ap.add_argument("--sweep-fractions", default=None,
                    help="sweep rates, as fractions of the 8xH100 best predicted peak")
    ap.add_argument("--jobs", type=int, default=2, help="processes (this machine has 2 cores)")
    args = ap.parse_args()
    quick = args.quick
    args.requests = args.requests or (600 if quick else 5000)
    args.seeds = args.seeds or (1 if quick else 3)
    args.time_budget = args.time_budget if args.time_budget is not None else (1.0 if quick else TIME_BUDGET_S)
    if args.sweep_clusters is None:
        args.sweep_clusters = "h100x8,hetero-5" if quick else "h100x8,hetero-2,hetero-5,hetero-70pct"
    if args.sweep_fractions is None:
        args.sweep_fractions = "0.5,1.0,1.5" if quick else "0.25,0.5,0.75,1.0,1.5"
    sweep_clusters = [c for c in args.sweep_clusters.split(",") if c]
    fractions = [float(f) for f in args.sweep_fractions.split(",") if f]
    suffix = "_quick" if quick else ""
    out = RESULTS / f"paper_eval{suffix}.json"
    t0 = time.perf_counter()
    models, classes = args.models.split(","), args.classes.split(",")
    # The costliest first (heavy-decode classes), so that the processes end together.
    cost = {"HPHD": 0, "LPHD": 1, "HPLD": 2, "LPLD": 3}
    tasks = sorted(((m, k, c, args) for m in models for k in classes for c in CLUSTERS),
                   key=lambda t: (cost.get(t[1], 4), t[2] == "h100x8"))
    cases = {d["key"]: d for d in _pool_map(run_case, tasks, args.jobs)}
    sweeps = []
    for m in models:
        for k in classes:
            homog = [r["predicted_rps"] for r in cases[(m, k, "h100x8")]["rows"]]
            if homog and fractions:
                rates = [f * max(homog) for f in fractions]
                sweeps += [(m, k, c, cases[(m, k, c)]["plans"], rates, args) for c in sweep_clusters]
    swept = _pool_map(run_sweep, sweeps, args.jobs)
    results = []
    for m in models:
        for k in classes:
            here = [cases[(m, k, c)] for c in CLUSTERS]
            rows = [r for d in here for r in d["rows"]]
            entry = {"model": m, "class": k, "class_requests": _samples(k, 1, 1)[0], "runs": rows,
                     "ratios": ratios(rows), "plan_cpu_s": sum(d["plan_cpu_s"] for d in here),
                     "sim_cpu_s": sum(d["sim_cpu_s"] for d in here)}
            done = sorted((d for d in swept if d["key"][:2] == (m, k)), key=lambda d: CLUSTERS.index(d["key"][2]))
            if done:
                rates = next(t[4] for t in sweeps if t[:2] == (m, k))
                plot = None if quick else f"paper_eval_attainment_{m}_{k}.png"
                entry["sweep"] = sweep_entry(done, rates, fractions, plot)
                entry["sweep_cpu_s"] = sum(d["cpu_s"] for d in done)
            results.append(entry)
    wall = time.perf_counter() - t0
    cpu = {"plan": sum(e["plan_cpu_s"] for e in results), "sim": sum(e["sim_cpu_s"] for e in results),
           "sweep": sum(e.get("sweep_cpu_s", 0.0) for e in results)}
    out.write_text(json.dumps({
        "requests": args.requests, "seeds": args.seeds, "router": ROUTER, "online_load": ONLINE_LOAD,
        "time_budget_s": args.time_budget, "models": args.models, "sweep_clusters": sweep_clusters,
        "jobs": args.jobs, "wall_s": wall, "cpu_s": cpu, "results": results}, indent=2) + "\n")
    print_tables(results)
    print(f"CPU seconds: planning {cpu['plan']:.0f}, simulation {cpu['sim']:.0f}, sweep {cpu['sweep']:.0f} "
          f"(total {sum(cpu.values()):.0f}, in {args.jobs} processes)")
    print(f"wrote {out} in {wall:.0f} s")


if __name__ == "__main__":
    main()
