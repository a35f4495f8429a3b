"""HexGen-2's disaggregated planner: the flow network, routing, refinement, determinism, optimality."""

import random

import pytest

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.disagg_exhaustive import exhaustive_disaggregated
from hexserve.planner.exhaustive import random_cluster
from hexserve.planner.hexgen2 import plan_disaggregated, search_disaggregated
from hexserve.planner.maxflow import solve
from hexserve.planner.plan import load_plan, save_plan
from hexserve.planner.stagecost import CostTable
from hexserve.planner.validate import validate_plan
from hexserve.planner.workload import Workload
from hexserve.specs.cluster import parse_cluster
from hexserve.specs.model import load_model

HPLD = Workload(prompt_len=2606, output_len=72, slo_tpot=0.2)
SMALL = {
    "name": "small",
    "nodes": [
        {"name": "a", "gpus": [{"type": "A100-80GB", "count": 4}], "intra_link": {"kind": "nvlink3"}},
        {"name": "b", "gpus": [{"type": "L40", "count": 4}], "intra_link": {"kind": "pcie4"}},
    ],
    "inter_node": {"default": {"kind": "ib-hdr"}},
}


@pytest.fixture(scope="module")
def setting():
    model, cluster, cal = load_model("llama-2-13b"), parse_cluster(SMALL), load_calibration()
    table = CostTable(model, cluster, cal, HPLD)
    return model, cluster, cal, table, search_disaggregated(table, seed=0, time_budget_s=60)


def _conserves(flow, caps_p, caps_d, links):
    tol = 1e-5
    assert flow.value == pytest.approx(sum(flow.prefill_flow), abs=tol)
    assert flow.value == pytest.approx(sum(flow.decode_flow), abs=tol)
    for i, f in enumerate(flow.prefill_flow):
        assert f == pytest.approx(sum(v for (p, _), v in flow.edge_flow.items() if p == i), abs=tol)
        assert f <= caps_p[i] + tol
    for k, f in enumerate(flow.decode_flow):
        assert f == pytest.approx(sum(v for (_, d), v in flow.edge_flow.items() if d == k), abs=tol)
        assert f <= caps_d[k] + tol
    for edge, f in flow.edge_flow.items():
        assert 0 < f <= links[edge] + tol


def test_flow_is_conserved_on_random_networks():
    rng = random.Random(5)
    for _ in range(30):
        caps_p = [rng.uniform(0, 10) for _ in range(rng.randint(1, 5))]
        caps_d = [rng.uniform(0, 10) for _ in range(rng.randint(1, 5))]
        links = {(i, k): rng.choice([0.0, rng.uniform(0, 6)]) for i in range(len(caps_p)) for k in range(len(caps_d))}
        flow = solve(caps_p, caps_d, links)
        _conserves(flow, caps_p, caps_d, links)
        assert flow.value <= min(sum(caps_p), sum(caps_d)) + 1e-5


def test_no_route_over_a_missing_link():
    flow = solve([5.0, 5.0], [5.0, 5.0], {(0, 0): 3.0, (1, 1): 0.0})  # (0, 1), (1, 0) absent, (1, 1) carries nothing
    assert set(flow.edge_flow) == {(0, 0)} and flow.value == pytest.approx(3.0)
    prefill, links, decode = flow.saturated()
    assert (0, 0) in links  # the link is the bottleneck the refinement should attack


def test_planner_flow_is_conserved_and_routes_exist(setting):
    _, _, _, _, result = setting
    e = result.evaluation
    caps_p = [e.fits[g].requests_per_s for g in e.prefill]
    caps_d = [e.fits[g].requests_per_s for g in e.decode]
    _conserves(e.flow, caps_p, caps_d, e.links)
    assert all(e.links[edge] > 0 for edge in e.flow.edge_flow)


def test_plan_shares_and_round_trip(setting, tmp_path):
    model, cluster, cal, table, result = setting
    from hexserve.planner.disagg_build import plan_from_evaluation

    plan = plan_from_evaluation(table, result.evaluation, seed=0, notes=result.notes())
    validate_plan(plan, cluster, model, cal)
    roles = {r.role for r in plan.replicas}
    assert roles == {"prefill", "decode"}
    for i, r in enumerate(plan.replicas):
        if r.role == "prefill":
            assert sum(x.share for x in plan.routing if x.prefill == i) == pytest.approx(1.0)
    for route in plan.routing:
        assert plan.replicas[route.prefill].role == "prefill" and plan.replicas[route.decode].role == "decode"
        assert route.requests_per_s <= route.capacity_per_s * (1 + 1e-6)
    assert sum(r.share for r in plan.replicas if r.role == "decode") == pytest.approx(1.0)
    save_plan(plan, tmp_path / "p.json")
    again = load_plan(tmp_path / "p.json")
    assert again == plan and again.routing and again.notes
    validate_plan(again, cluster, model, cal)


def test_refinement_never_lowers_the_flow(setting):
    _, _, _, table, result = setting
    assert result.requests_per_s >= result.start_value
    for move in result.log.moves:
        assert move.after > move.before
    without = search_disaggregated(table, seed=0, phase3=False)
    assert result.requests_per_s >= without.requests_per_s * (1 - 1e-9)


def test_same_seed_same_plan(setting):
    model, cluster, cal, _, _ = setting
    first = plan_disaggregated(model, cluster, HPLD, cal, seed=3, time_budget_s=60).to_json()
    assert plan_disaggregated(model, cluster, HPLD, cal, seed=3, time_budget_s=60).to_json() == first


def test_near_exhaustive_on_small_clusters():
    """Target >= 0.95 of the exhaustive best over partitions and roles (same phase layouts) on every case."""
    rng, cal, ratios = random.Random(3), load_calibration(), []
    workloads = [(2606, 72), (1210, 387), (229, 178), (356, 85)]
    while len(ratios) < 6:
        cluster = random_cluster(rng, max_devices=6)
        model = load_model(rng.choice(["llama-2-7b", "llama-2-13b"]))
        workload = Workload(*rng.choice(workloads), slo_tpot=rng.choice([None, 0.2]))
        best = exhaustive_disaggregated(CostTable(model, cluster, cal, workload))
        if best is None:
            continue
        found = search_disaggregated(CostTable(model, cluster, cal, workload), seed=0, time_budget_s=60)
        assert found.requests_per_s <= best.value * (1 + 1e-6)
        ratios.append(found.requests_per_s / best.value)
    assert min(ratios) >= 0.95, ratios
