"""The simulator: one request alone, conservation, KV bounds, Little's law, KV links, determinism."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.hexgen2 import plan_disaggregated
from hexserve.planner.plan import Plan, Replica, Stage, cluster_fingerprint, model_fingerprint
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import Workload as PlanWorkload
from hexserve.sim.costs import ReplicaCosts
from hexserve.sim.kv import BlockPool
from hexserve.sim.metrics import summarize
from hexserve.sim.simulate import simulate
from hexserve.specs.cluster import load_cluster, parse_cluster
from hexserve.specs.model import load_model
from hexserve.specs.workload import Request, Workload, load_workload

CAL = load_calibration()


def two_stage_plan() -> tuple[Plan, object, object]:
    """Llama-2-7B as one replica of two single-GPU stages of unequal layers (an asymmetric pipeline)."""
    cluster, model = load_cluster("h100x8"), load_model("llama-2-7b")
    replica = Replica("colocated", (Stage((0,), 1, (0, 12)), Stage((1,), 1, (12, 32))), 1.0)
    plan = Plan(model.name, model_fingerprint(model), cluster.name, cluster_fingerprint(cluster),
                PlanWorkload(512, 128), (replica,))
    return plan, cluster, model


def test_one_request_alone_costs_its_prefill_then_one_pass_per_token():
    plan, cluster, model = two_stage_plan()
    prompt, output = 700, 20
    r = simulate(plan, cluster, model, Workload("one", (Request(0.0, prompt, output),)), CAL)
    costs = ReplicaCosts(CostTable(model, cluster, CAL, plan.workload), plan.replicas[0])
    ttft = r.first_token[0] - r.arrival[0]
    assert ttft == pytest.approx(sum(costs.prefill(1, prompt)), rel=1e-9)
    passes = [sum(costs.decode(1, prompt + k)) for k in range(1, output)]
    tpot = (r.finish[0] - r.first_token[0]) / (output - 1)
    assert tpot == pytest.approx(np.mean(passes), rel=1e-9)
    assert r.finish[0] - r.arrival[0] == pytest.approx(ttft + (output - 1) * tpot, rel=1e-9)


def test_stage_times_are_the_planners():
    """The simulator prices a stage exactly as the planner's CostTable does (same mapping, same model)."""
    plan, cluster, model = two_stage_plan()
    table = CostTable(model, cluster, CAL, PlanWorkload(700, 20))
    costs = ReplicaCosts(table, plan.replicas[0])
    stages = [tuple(cluster.devices[d] for d in s.devices) for s in plan.replicas[0].stages]
    for j, s in enumerate(plan.replicas[0].stages):
        send = table.boundary_link(stages[j], stages[1] if j == 0 else None)
        planned = table.cost(stages[j], j == 0, j == 1, send, 1)
        assert costs.prefill(1, 700)[j] == pytest.approx(planned.prefill.at(s.num_layers), rel=1e-9)


@cache
def hetero_plan() -> Plan:
    return plan_colocated(load_model("llama-2-70b"), load_cluster("hetero-5"), PlanWorkload(1155, 211, slo_tpot=0.2),
                          CAL)


def run_hetero(n: int, fraction: float | None, seed: int = 0, **kw):
    plan = hetero_plan()
    w = load_workload("azure-conv").sample(n, seed)
    w = w.offline() if fraction is None else w.with_poisson_arrivals(fraction * plan.predicted.requests_per_s, seed)
    return simulate(plan, load_cluster("hetero-5"), load_model("llama-2-70b"), w, CAL, **kw)


def test_no_request_lost_or_duplicated():
    r = run_hetero(600, 0.6)
    assert r.finished_count == 600
    assert r.completed.all()
    assert (r.first_token >= r.arrival).all() and (r.finish >= r.first_token).all()
    assert ((r.replica >= 0) & (r.replica < len(r.replicas))).all()


def test_kv_blocks_stay_within_the_pool_under_preemption():
    # Offline with a sequence cap far above the plan's micro-batch: blocks run out and sequences are preempted.
    r = run_hetero(2000, None, max_seqs=512)
    assert r.completed.all()
    assert sum(x.preemptions for x in r.replicas) > 0
    for x in r.replicas:
        assert 0 < x.peak_blocks <= x.kv_blocks


def test_block_pool_refuses_overcommit_and_negative():
    pool = BlockPool(10)
    pool.take(10)
    with pytest.raises(RuntimeError):
        pool.take(1)
    pool.give(10)
    with pytest.raises(RuntimeError):
        pool.give(1)


def test_littles_law_on_a_steady_load():
    r = run_hetero(1500, 0.5, seed=3)
    s = summarize(r)
    span = r.finish.max() - r.arrival.min()
    mean_in_system = r.occupancy_s / span  # time average kept by the simulator's own event bookkeeping
    rate = len(r.arrival) / span
    assert mean_in_system == pytest.approx(rate * s.e2e_s.mean, rel=0.01)


def test_same_seed_same_result_and_least_loaded_router_runs():
    a, b = run_hetero(300, 0.7, seed=5), run_hetero(300, 0.7, seed=5)
    assert np.array_equal(a.finish, b.finish) and np.array_equal(a.first_token, b.first_token)
    c = run_hetero(300, 0.7, seed=5, router="least-loaded")
    assert c.completed.all()


def disagg_case(kind: str):
    spec = {
        "name": f"pd-{kind}",
        "nodes": [{"name": "p", "gpus": [{"type": "h100", "count": 1}]},
                  {"name": "d", "gpus": [{"type": "h100", "count": 1}]}],
        "inter_node": {"default": {"kind": kind}},
    }
    cluster, model = parse_cluster(spec), load_model("llama-2-7b")
    plan = plan_disaggregated(model, cluster, PlanWorkload(1024, 64, slo_tpot=0.2), CAL, seed=0, time_budget_s=2)
    w = load_workload("azure-conv:HPLD").head(200).with_poisson_arrivals(0.5 * plan.predicted.requests_per_s, 1)
    return plan, simulate(plan, cluster, model, w, CAL)


def test_slow_kv_link_lengthens_ttft():
    fast_plan, fast = disagg_case("nvlink4")
    slow_plan, slow = disagg_case("eth-10g")
    assert {r.role for r in fast_plan.replicas} == {"prefill", "decode"} == {r.role for r in slow_plan.replicas}
    assert fast.completed.all() and slow.completed.all()
    assert summarize(slow).ttft_s.mean > 1.2 * summarize(fast).ttft_s.mean
    assert slow.links[0].transfers == 200
