"""HexGen's own case, determinism, baselines and the scale of the colocated search."""

import pytest

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.baselines import homogeneous, per_node, symmetric
from hexserve.planner.exhaustive import exhaustive_plan
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.layout import best_layout
from hexserve.planner.stagecost import CostTable
from hexserve.planner.validate import validate_plan
from hexserve.planner.workload import Workload
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model

WORKLOAD = Workload(prompt_len=512, output_len=128, slo_tpot=0.2)


@pytest.fixture(scope="module")
def case():
    return load_model("llama-2-70b"), load_cluster("hexgen-case"), load_calibration()


def test_symmetric_tp_and_plain_pp_do_not_fit_and_say_by_how_much(case):
    model, cluster, cal = case
    table = CostTable(model, cluster, cal, WORKLOAD)
    for tp, pp in ((8, 1), (1, 8)):
        result = symmetric(table, tp, pp)
        assert not result.fits
        assert "A4000" in result.problems[0] and "short by" in result.problems[0] and "GiB" in result.problems[0]


def test_planner_finds_a_feasible_asymmetric_plan(case):
    """With no TPOT target the optimum (exhaustive: any TP groups) is HexGen's own shape, TP (2, 2, 4) over
    A5000s, A4000s and A6000s; with TPOT <= 0.4 s it is TP (4, 4), the first group mixing 2 A5000s and 2
    A4000s. Both use all eight devices in stages that differ in types, TP and layers."""
    model, cluster, cal = case
    for workload in (Workload(512, 128), Workload(512, 128, slo_tpot=0.4)):
        plan = plan_colocated(model, cluster, workload, cal)
        validate_plan(plan, cluster, model, cal)
        stages = [s for r in plan.replicas for s in r.stages]
        types = {d.index: d.type.name for d in cluster.devices}
        assert len({tuple(sorted(types[i] for i in s.devices)) for s in stages}) > 1, "stages should differ in types"
        assert len({s.num_layers for s in stages}) > 1, "stages should differ in layer count"
        assert sum(len(s.devices) for s in stages) == 8
        assert all(workload.slo_tpot is None or r.predicted.tpot_s <= workload.slo_tpot for r in plan.replicas)
        best, _ = exhaustive_plan(CostTable(model, cluster, cal, workload))
        assert plan.predicted.tokens_per_s == pytest.approx(best, rel=1e-9)
    assert sorted(s.tp for s in stages) == [4, 4]


def test_tight_tpot_leaves_the_small_cards_out(case):
    """With TPOT <= 0.2 s the four A6000s alone (TP 4) beat any pipeline over all eight devices: a
    pipeline's micro-batches take turns, a prompt's prefill step holds up the decode steps behind it
    (throughput.pipeline_efficiency, about 0.8 here), which lowers throughput and raises TPOT, so the
    pipeline must run smaller batches. The simulator shows the same (docs/planner.md)."""
    model, cluster, cal = case
    plan = plan_colocated(model, cluster, WORKLOAD, cal)
    stages = [[cluster.devices[d].type.name for d in s.devices] for r in plan.replicas for s in r.stages]
    assert stages == [["A6000"] * 4]
    best, _ = exhaustive_plan(CostTable(model, cluster, cal, WORKLOAD))
    assert plan.predicted.tokens_per_s == pytest.approx(best, rel=1e-9)


def test_tp_groups_within_one_type_give_hexgens_asymmetric_tp(case):
    """With every TP group inside one class, as in HexGen's search, the layout is its TP (4, 2, 2)."""
    model, cluster, cal = case
    fit = best_layout(CostTable(model, cluster, cal, WORKLOAD), cluster.devices, mixed=False)
    assert fit is not None and sorted(len(s) for s in fit.stages) == [2, 2, 4]
    assert len(set(fit.layers)) > 1


def test_planner_beats_or_matches_every_baseline(case):
    model, cluster, cal = case
    table = CostTable(model, cluster, cal, WORKLOAD)
    found = plan_colocated(model, cluster, WORKLOAD, cal).predicted.tokens_per_s
    for baseline in (symmetric(table), homogeneous(table), per_node(table)):
        assert found >= baseline.tokens_per_s * (1 - 1e-9)


def test_same_seed_same_plan():
    model, cluster, cal = load_model("llama-2-70b"), load_cluster("hetero-3"), load_calibration()
    first = plan_colocated(model, cluster, WORKLOAD, cal, seed=7).to_json()
    assert plan_colocated(model, cluster, WORKLOAD, cal, seed=7).to_json() == first


def test_per_dollar_is_no_worse_per_dollar():
    model, cluster, cal = load_model("llama-2-70b"), load_cluster("hetero-2"), load_calibration()
    by_tokens = plan_colocated(model, cluster, WORKLOAD, cal).predicted
    by_dollar = plan_colocated(model, cluster, WORKLOAD, cal, objective="per-dollar").predicted
    assert by_dollar.usd_per_million_tokens <= by_tokens.usd_per_million_tokens * (1 + 1e-9)


def test_nothing_fits_is_one_line():
    from hexserve.errors import SpecError

    with pytest.raises(SpecError) as e:
        plan_colocated(load_model("llama-2-70b"), load_cluster("cpu-local"), WORKLOAD, load_calibration())
    assert "\n" not in str(e.value) and "short" in str(e.value)


def _mean_latency(plan) -> float:
    return sum(r.share * r.predicted.unloaded_latency_s for r in plan.replicas)


def test_latency_objective_minimises_the_mean_latency(case):
    """`latency` minimises the mean unloaded latency of a request routed by the plan's shares: no higher
    than the throughput plan's, nor than any of its replicas laid out for latency alone."""
    model, cluster, cal = case
    by_tokens = plan_colocated(model, cluster, WORKLOAD, cal)
    by_latency = plan_colocated(model, cluster, WORKLOAD, cal, objective="latency")
    validate_plan(by_latency, cluster, model, cal)
    assert _mean_latency(by_latency) <= _mean_latency(by_tokens) * (1 + 1e-9)
    table = CostTable(model, cluster, cal, WORKLOAD)
    for r in by_tokens.replicas:
        devices = [d for d in cluster.devices if any(d.index in s.devices for s in r.stages)]
        alone = best_layout(table, devices, objective="latency")
        assert _mean_latency(by_latency) <= alone.perf.unloaded_latency_s * (1 + 1e-9)
