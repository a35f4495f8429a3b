"""`make demo`: the main job on shipped examples, one step after another, each shown with its command."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from hexserve.cli import main as hexserve
from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.auto import plan_auto
from hexserve.planner.workload import WORKLOAD_CLASSES
from hexserve.planner.workload import Workload as PlanWorkload
from hexserve.sim.metrics import summarize
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import load_workload

STEPS = [
    ("A heterogeneous cluster from a shipped file", "cluster hetero-4"),
    ("Llama-2-70B on one 8xH100 node (HexGen-2's baseline)", "estimate --model llama-2-70b --gpus 8xh100"),
    ("HexGen's case: symmetric TP=8 overflows the 16 GiB A4000s",
     "estimate --model llama-2-70b --cluster hexgen-case --tp 8"),
    ("... so the planner lays it out asymmetrically: each stage sized to its GPUs (layers, types, TP)",
     "plan --model llama-2-70b --cluster hexgen-case"),
    ("Colocated replicas over a whole heterogeneous cluster, written to a plan file",
     "plan --model llama-2-70b --cluster hetero-4 --out out/hetero-4-llama-2-70b.json"),
    ("The embedded default model (SmolLM2-135M-Instruct) answers a chat request on this machine",
     'generate --model smollm2 --chat --max-tokens 32 --prompt "What is the capital of France?"'),
]


COMPARE = ("h100x8", "hetero-5")  # the same price: $29.52/h and $29.44/h
COMPARE_CLASS, COMPARE_REQUESTS = "HPLD", 400


def simulated_comparison() -> None:
    """Plan Llama-2-70B on 8xH100 and on a heterogeneous cluster of the same price (HexGen or HexGen-2,
    whichever predicts more), replay the same trace requests on both, and print one line each."""
    print(f"\n=== Simulated: Llama-2-70B, {COMPARE_REQUESTS} {COMPARE_CLASS} requests of the Azure trace, all at once")
    model, calibration = load_model("llama-2-70b"), load_calibration()
    lengths = WORKLOAD_CLASSES[COMPARE_CLASS]
    requests = load_workload(f"azure-conv:{COMPARE_CLASS}").sample(COMPARE_REQUESTS, seed=0).offline()
    rows = []
    for name in COMPARE:
        cluster = load_cluster(name)
        plan = plan_auto(model, cluster, PlanWorkload(*lengths, slo_tpot=0.2), calibration, time_budget_s=10)
        summary = summarize(simulate(plan, cluster, model, requests, calibration, router="least-loaded"))
        rows.append((name, cluster.price_per_hour, plan.planner, summary))
    base = rows[0][3].saturated_tokens_per_s
    for name, price, planner, s in rows:
        tokens = s.saturated_tokens_per_s
        print(
            f"  {name:9} ${price:5.2f}/h  {planner:8} {tokens:7.0f} output tok/s ({tokens / base:.2f}x)  "
            f"mean TTFT {s.ttft_s.mean:6.2f} s  TPOT {s.tpot_s.mean * 1e3:4.0f} ms"
        )
    print("  (docs/evaluation.md: where these agree with the papers' claims and where not)")


def main() -> int:
    Path("out").mkdir(exist_ok=True)
    for title, command in STEPS:
        print(f"\n=== {title}\n$ hexserve {command}", flush=True)
        code = hexserve(shlex.split(command))
        if code:
            return code
    simulated_comparison()
    return 0


if __name__ == "__main__":
    sys.exit(main())
