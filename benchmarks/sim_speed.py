"""Simulator speed: the whole Azure conversation trace (19,366 requests) on a 16-device plan.

    .venv/bin/python benchmarks/sim_speed.py

Plans Llama-2-70B on hetero-5 (16 GPUs) with HexGen (colocated) for the trace's mean lengths, then
replays every request of the trace at its own timestamps, and offline (all at once). Prints a table and
writes benchmarks/results/sim_speed.json. The target is < 20 s per replay on the development machine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.workload import Workload as PlanWorkload
from hexserve.sim.metrics import summarize
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import load_workload

RESULTS = Path(__file__).parent / "results" / "sim_speed.json"
TARGET_S = 20.0


def main() -> None:
    cluster, model, cal = load_cluster("hetero-5"), load_model("llama-2-70b"), load_calibration(None)
    trace = load_workload("azure-conv")
    shape = PlanWorkload(round(trace.mean_prompt_len), round(trace.mean_output_len), slo_tpot=0.2)
    plan = plan_colocated(model, cluster, shape, cal)
    rows = []
    for label, workload in (("trace arrivals", trace), ("offline", trace.offline())):
        began = time.perf_counter()
        result = simulate(plan, cluster, model, workload, cal)
        wall = time.perf_counter() - began
        s = summarize(result)
        rows.append({
            "run": label, "requests": s.requests, "completed": s.completed, "devices": len(cluster.devices),
            "replicas": len(plan.replicas), "simulated_s": s.makespan_s, "events": result.events,
            "wall_s": wall, "requests_per_wall_s": s.requests / wall, "target_s": TARGET_S,
            "meets_target": wall < TARGET_S,
        })
    print(f"{'run':<16}{'requests':>10}{'done':>8}{'sim s':>10}{'events':>10}{'wall s':>9}{'req/wall s':>12}")
    for r in rows:
        print(f"{r['run']:<16}{r['requests']:>10,}{r['completed']:>8,}{r['simulated_s']:>10,.0f}{r['events']:>10,}"
              f"{r['wall_s']:>9.2f}{r['requests_per_wall_s']:>12,.0f}")
    RESULTS.write_text(json.dumps({"cluster": cluster.name, "model": model.name, "plan": plan.planner,
                                   "runs": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
