"""Planner and simulator agree on steady saturated throughput (benchmarks/sim_agreement.py runs 48 plans).

Each plan is replayed offline on requests drawn from a class of the Azure trace; the simulated saturated
output tokens/s (`metrics.saturated_tokens_per_s`) must be within 15% of the plan's prediction. The
pipelined case is chosen so that the bubbles matter: without `throughput.pipeline_efficiency` the planner
would be more than 15% off.
"""

from __future__ import annotations

import pytest

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.build import plan_from_fits
from hexserve.planner.disagg_baselines import distserve
from hexserve.planner.disagg_build import plan_from_evaluation
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.stagecost import CostTable
from hexserve.planner.throughput import fit_throughput
from hexserve.planner.workload import WORKLOAD_CLASSES, Workload
from hexserve.sim.metrics import saturated_tokens_per_s
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import load_workload

CAL = load_calibration()
TOLERANCE = 0.15


def _simulated_over_predicted(plan, cluster, model, klass: str, requests: int = 1500) -> float:
    sample = load_workload(f"azure-conv:{klass}").sample(requests, seed=0, with_replacement=True, keep_order=False)
    result = simulate(plan, cluster, model, sample.offline(), CAL)
    return saturated_tokens_per_s(result) / plan.predicted.tokens_per_s


def test_pipelined_replicas_lose_what_the_planner_says_to_bubbles():
    """Llama-2-70B on 8xH100 as two replicas of two TP=2 stages, heavy prompts: a prefill step in one
    micro-batch holds up the other's decode steps; the planner now charges it (efficiency ~0.7)."""
    model, cluster = load_model("llama-2-70b"), load_cluster("h100x8")
    table = CostTable(model, cluster, CAL, Workload(*WORKLOAD_CLASSES["HPLD"], slo_tpot=0.2))
    d = cluster.devices
    fits = [fit_throughput(table, ((d[i], d[i + 1]), (d[i + 2], d[i + 3]))) for i in (0, 4)]
    plan = plan_from_fits(table, fits)
    perf = fits[0].perf
    efficiency = perf.requests_per_s * max(perf.stage_busy_s)
    assert efficiency < 1 - TOLERANCE  # the bubbles are larger than the tolerance
    assert _simulated_over_predicted(plan, cluster, model, "HPLD") == pytest.approx(1.0, abs=TOLERANCE)


def test_asymmetric_heterogeneous_pipeline():
    """HexGen's case (A6000s, A5000s, A4000s), no TPOT target: an asymmetric pipeline over all eight."""
    model, cluster = load_model("llama-2-70b"), load_cluster("hexgen-case")
    plan = plan_colocated(model, cluster, Workload(*WORKLOAD_CLASSES["HPHD"]), CAL)
    assert len(plan.replicas[0].stages) > 1
    assert _simulated_over_predicted(plan, cluster, model, "HPHD") == pytest.approx(1.0, abs=TOLERANCE)


def test_disaggregated_plan():
    """DistServe-style on 8xH100: two-stage prefill replicas feeding a decode replica (max-flow prediction)."""
    model, cluster = load_model("llama-2-70b"), load_cluster("h100x8")
    table = CostTable(model, cluster, CAL, Workload(*WORKLOAD_CLASSES["HPHD"], slo_tpot=0.2))
    plan = plan_from_evaluation(table, distserve(table), "distserve", 0)
    assert any(r.role == "prefill" and len(r.stages) > 1 for r in plan.replicas)
    assert _simulated_over_predicted(plan, cluster, model, "HPHD") == pytest.approx(1.0, abs=TOLERANCE)
