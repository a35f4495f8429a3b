"""HexGen-2's disaggregated planner: quality against exhaustive search on clusters of at most 8 devices,
planning time on 16, 32 and 64 devices, ablations on hetero-1..5 x Llama-2-70B, and the homogeneous
baselines (DistServe-style, colocated HexGen) on 8xH100 at the same budget.

    .venv/bin/python benchmarks/planner_disagg.py [--cases 12] [--seed 0]

Prints the tables and writes benchmarks/results/planner_disagg.json. Requests/s are the max-flow's;
output tokens/s = requests/s x the class's mean output length.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.disagg_baselines import ABLATIONS, distserve
from hexserve.planner.disagg_exhaustive import exhaustive_disaggregated
from hexserve.planner.exhaustive import random_cluster
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.hexgen2 import search_disaggregated
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import WORKLOAD_CLASSES, Workload
from hexserve.specs.cluster import load_cluster, parse_cluster
from hexserve.specs.model import load_model

RESULTS = Path(__file__).parent / "results" / "planner_disagg.json"
SLO_TPOT = 0.2


def workload(name: str) -> Workload:
    return Workload(*WORKLOAD_CLASSES[name], slo_tpot=SLO_TPOT)


def quality(cases: int, seed: int) -> list[dict]:
    rng, cal, rows = random.Random(seed), load_calibration(), []
    while len(rows) < cases:
        cluster = random_cluster(rng, max_devices=8)
        model = load_model(rng.choice(["llama-2-7b", "llama-2-13b", "llama-2-70b"]))
        klass = rng.choice(list(WORKLOAD_CLASSES))
        w = Workload(*WORKLOAD_CLASSES[klass], slo_tpot=rng.choice([None, 0.1, 0.2]))
        start = time.perf_counter()
        best = exhaustive_disaggregated(CostTable(model, cluster, cal, w))
        exhaustive_s = time.perf_counter() - start
        if best is None:
            continue  # nothing disaggregates (a 70B model on small cards): no ratio to report
        start = time.perf_counter()
        found = search_disaggregated(CostTable(model, cluster, cal, w), seed=seed)
        rows.append({
            "case": len(rows), "devices": len(cluster.devices), "nodes": len(cluster.nodes),
            "types": cluster.type_counts(), "model": model.name, "workload": klass, "slo_tpot": w.slo_tpot,
            "search_rps": found.requests_per_s, "exhaustive_rps": best.value,
            "ratio": found.requests_per_s / best.value, "search_s": time.perf_counter() - start,
            "exhaustive_s": exhaustive_s,
        })
    return rows


def scaled_cluster(devices: int) -> object:
    """Nodes of 8 (H100, A100, L40, A6000 in turn) on InfiniBand HDR (as benchmarks/planner.py)."""
    kinds = [("H100-SXM", "nvlink4"), ("A100-80GB", "nvlink3"), ("L40", "pcie4"), ("A6000", "pcie4")]
    nodes = [{"name": f"n{i}", "gpus": [{"type": kinds[i % 4][0], "count": 8}], "intra_link": {"kind": kinds[i % 4][1]}}
             for i in range(devices // 8)]
    return parse_cluster({"name": f"scaled-{devices}", "nodes": nodes, "inter_node": {"default": {"kind": "ib-hdr"}}})


def speed(seed: int) -> list[dict]:
    cal, model, rows = load_calibration(), load_model("llama-2-70b"), []
    for cluster in (scaled_cluster(16), scaled_cluster(32), load_cluster("hetero-64")):
        for klass in ("HPLD", "LPHD"):
            start = time.perf_counter()
            r = search_disaggregated(CostTable(model, cluster, cal, workload(klass)), seed=seed)
            groups = r.evaluation.assignment.roles
            rows.append({
                "cluster": cluster.name, "devices": len(cluster.devices), "workload": klass,
                "seconds": time.perf_counter() - start, "rps": r.requests_per_s,
                "prefill": groups.count("prefill"), "decode": groups.count("decode"),
                "evaluations": r.evaluations, "stop": r.log.stop,
            })
    return rows


def ablation(seed: int) -> list[dict]:
    cal, model, rows = load_calibration(), load_model("llama-2-70b"), []
    for klass in WORKLOAD_CLASSES:
        w = workload(klass)
        homog = load_cluster("h100x8")
        row_h = {"cluster": "h100x8", "workload": klass}
        ds = distserve(CostTable(model, homog, cal, w))
        row_h["distserve"] = ds.value if ds else 0.0
        row_h["colocated"] = plan_colocated(model, homog, w, cal, seed=seed).predicted.requests_per_s
        row_h["hexgen2"] = search_disaggregated(CostTable(model, homog, cal, w), seed=seed).requests_per_s
        rows.append(row_h)
        for n in range(1, 6):
            cluster = load_cluster(f"hetero-{n}")
            row = {"cluster": cluster.name, "workload": klass}
            for name, (phase1, phase3) in ABLATIONS.items():
                start = time.perf_counter()
                r = search_disaggregated(CostTable(model, cluster, cal, w), seed, phase1=phase1, phase3=phase3)
                row[name] = r.requests_per_s if r else 0.0
                row[f"{name} s"] = time.perf_counter() - start
            row["colocated"] = plan_colocated(model, cluster, w, cal, seed=seed).predicted.requests_per_s
            row["vs distserve h100x8"] = row["hexgen2"] / row_h["distserve"] if row_h["distserve"] else None
            rows.append(row)
    return rows


def _print(title: str, rows: list[dict], columns: list[str]) -> None:
    print(f"\n{title}")
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(x[k]) for x in cells)) for k, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    for x in cells:
        print("  ".join(v.rjust(w) for v, w in zip(x, widths, strict=True)))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if value < 100 else f"{value:,.0f}"
    return "-" if value is None else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    q = quality(args.cases, args.seed)
    _print("quality vs exhaustive (random clusters, <= 8 devices; req/s)", q,
           ["case", "devices", "nodes", "model", "workload", "slo_tpot", "search_rps", "exhaustive_rps", "ratio",
            "search_s", "exhaustive_s"])
    ratios = [r["ratio"] for r in q]
    print(f"ratio: min {min(ratios):.4f}, mean {sum(ratios) / len(ratios):.4f}, >= 0.95 in "
          f"{sum(x >= 0.95 for x in ratios)}/{len(ratios)}")
    s = speed(args.seed)
    _print(f"planning time, llama-2-70b, TPOT SLO {SLO_TPOT} s", s,
           ["cluster", "devices", "workload", "seconds", "rps", "prefill", "decode", "evaluations", "stop"])
    a = ablation(args.seed)
    _print(f"ablation, llama-2-70b, TPOT SLO {SLO_TPOT} s (req/s)", a,
           ["cluster", "workload", "distserve", *ABLATIONS, "colocated", "vs distserve h100x8", "hexgen2 s"])
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"quality": q, "speed": s, "ablation": a}, indent=2) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
