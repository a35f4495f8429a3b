"""Planner quality and speed: HexGen's colocated search against exhaustive enumeration on random
clusters of at most 8 devices, planning time for 8, 16, 32 and 64 devices, and what each objective
(throughput, per-dollar, latency) trades on two named clusters.

    .venv/bin/python benchmarks/planner.py [--cases 20] [--seed 0]

Prints a table and writes benchmarks/results/planner.json. Times are CPU seconds of this (single-threaded)
process, `time.process_time()`: on the shared 2-core dev machine wall time mostly measures the neighbours.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.exhaustive import exhaustive_plan, random_cluster
from hexserve.planner.groups import GroupScorer
from hexserve.planner.hexgen import mean_latency, search_colocated
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import Workload
from hexserve.specs.cluster import load_cluster, parse_cluster
from hexserve.specs.model import load_model

MODELS = ("llama-2-7b", "llama-2-13b", "llama-2-70b")
RESULTS = Path(__file__).parent / "results" / "planner.json"


def quality(cases: int, seed: int) -> list[dict]:
    rng, cal, rows = random.Random(seed), load_calibration(), []
    for case in range(cases):
        cluster = random_cluster(rng, max_devices=8)
        model = load_model(rng.choice(MODELS))
        workload = Workload(slo_tpot=rng.choice([None, 0.1, 0.2]))
        start = time.process_time()
        found = sum(f.perf.tokens_per_s for f in search_colocated(CostTable(model, cluster, cal, workload), seed=seed))
        search_s = time.process_time() - start
        best, _ = exhaustive_plan(CostTable(model, cluster, cal, workload))
        rows.append({
            "case": case, "devices": len(cluster.devices), "nodes": len(cluster.nodes),
            "types": cluster.type_counts(), "model": model.name, "slo_tpot": workload.slo_tpot,
            "search_tokens_per_s": found, "exhaustive_tokens_per_s": best,
            "ratio": found / best if best else None, "search_s": search_s,
            "exhaustive_s": time.process_time() - start - search_s,
        })
    return rows


def scaled_cluster(devices: int) -> object:
    """Nodes of 8 (H100, A100, L40, A6000 in turn) on InfiniBand HDR: the 8/16/32-device speed points."""
    kinds = [("H100-SXM", "nvlink4"), ("A100-80GB", "nvlink3"), ("L40", "pcie4"), ("A6000", "pcie4")]
    nodes = [{"name": f"n{i}", "gpus": [{"type": kinds[i % 4][0], "count": 8}], "intra_link": {"kind": kinds[i % 4][1]}}
             for i in range(devices // 8)]
    data = {"name": f"scaled-{devices}", "nodes": nodes}
    if len(nodes) > 1:
        data["inter_node"] = {"default": {"kind": "ib-hdr"}}
    return parse_cluster(data)


def speed(seed: int) -> list[dict]:
    cal, rows = load_calibration(), []
    clusters = [scaled_cluster(n) for n in (8, 16, 32)] + [load_cluster("hetero-64")]
    for cluster in clusters:
        for name in ("llama-2-70b", "llama-2-13b"):
            table = CostTable(load_model(name), cluster, cal, Workload(slo_tpot=0.2))
            start = time.process_time()
            fits = search_colocated(table, seed=seed)
            rows.append({"cluster": cluster.name, "devices": len(cluster.devices), "model": name,
                         "seconds": time.process_time() - start, "replicas": len(fits),
                         "tokens_per_s": sum(f.perf.tokens_per_s for f in fits)})
    return rows


def objectives(seed: int) -> list[dict]:
    """Each objective's plan: tokens/s, $ per 1M tokens, mean unloaded latency by share, devices used."""
    cal, rows = load_calibration(), []
    for name in ("hexgen-case", "hetero-1"):
        table = CostTable(load_model("llama-2-70b"), load_cluster(name), cal, Workload(slo_tpot=0.2))
        for objective in ("throughput", "per-dollar", "latency"):
            start = time.process_time()
            fits = search_colocated(table, objective, seed)
            seconds = time.process_time() - start
            scorer = GroupScorer(table, "latency" if objective == "latency" else "throughput")
            tokens = sum(f.perf.tokens_per_s for f in fits)
            price = sum(d.price_per_hour for f in fits for s in f.stages for d in s)
            rows.append({"cluster": name, "model": "llama-2-70b", "objective": objective, "seconds": seconds,
                         "replicas": len(fits), "devices_used": sum(len(s) for f in fits for s in f.stages),
                         "tokens_per_s": tokens, "usd_per_million_tokens": price / (tokens * 3600) * 1e6,
                         "mean_unloaded_latency_s": mean_latency(scorer, [sum(f.stages, ()) for f in fits])})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    q = quality(args.cases, args.seed)
    print("quality vs exhaustive (random clusters, <= 8 devices, <= 3 nodes)")
    print(f"{'case':>4} {'dev':>3} {'nodes':>5} {'model':<12} {'tpot':>5} {'search tok/s':>12} {'exhaustive':>10} "
          f"{'ratio':>6} {'search s':>8} {'exh. s':>7}")
    for r in q:
        ratio = f"{r['ratio']:.4f}" if r["ratio"] is not None else "  n/a"
        print(f"{r['case']:>4} {r['devices']:>3} {r['nodes']:>5} {r['model']:<12} {str(r['slo_tpot']):>5} "
              f"{r['search_tokens_per_s']:>12,.0f} {r['exhaustive_tokens_per_s']:>10,.0f} {ratio:>6} "
              f"{r['search_s']:>8.2f} {r['exhaustive_s']:>7.2f}")
    ratios = [r["ratio"] for r in q if r["ratio"] is not None]
    good = sum(x >= 0.99 for x in ratios)
    print(f"ratio: min {min(ratios):.4f}, mean {sum(ratios) / len(ratios):.4f}, >= 0.99 in {good}"
          f"/{len(ratios)} feasible cases")
    s = speed(args.seed)
    print("\nplanning time (TPOT SLO 0.2 s, CPU seconds)")
    print(f"{'cluster':<12} {'devices':>7} {'model':<12} {'seconds':>8} {'replicas':>8} {'tokens/s':>10}")
    for r in s:
        print(f"{r['cluster']:<12} {r['devices']:>7} {r['model']:<12} {r['seconds']:>8.2f} {r['replicas']:>8} "
              f"{r['tokens_per_s']:>10,.0f}")
    o = objectives(args.seed)
    print("\nobjectives (llama-2-70b, TPOT SLO 0.2 s; latency: mean unloaded latency of a request routed by share)")
    print(f"{'cluster':<12} {'objective':<10} {'seconds':>7} {'replicas':>8} {'devices':>7} {'tokens/s':>9} "
          f"{'$/1M tok':>8} {'latency s':>9}")
    for r in o:
        print(f"{r['cluster']:<12} {r['objective']:<10} {r['seconds']:>7.2f} {r['replicas']:>8} {r['devices_used']:>7} "
              f"{r['tokens_per_s']:>9,.0f} {r['usd_per_million_tokens']:>8.2f} {r['mean_unloaded_latency_s']:>9.2f}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    data = {"clock": "process_time (CPU seconds)", "quality": q, "speed": s, "objectives": o}
    RESULTS.write_text(json.dumps(data, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
