"""HexGen's own case, determinism, baselines and the scale of the colocated search."""

import pytest

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.baselines import homogeneous, per_node, symmetric
from hexserve.planner.hexgen import plan_colocated
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
    model, cluster, cal = case
    plan = plan_colocated(model, cluster, WORKLOAD, cal)
    validate_plan(plan, cluster, model, cal)
    stages = [s for r in plan.replicas for s in r.stages]
    assert len({s.tp for s in stages}) > 1, "stages should differ in TP degree"
    assert len({s.num_layers for s in stages}) > 1, "stages should differ in layer count"
    assert plan.predicted.tokens_per_s > 0
    assert all(r.predicted.tpot_s <= WORKLOAD.slo_tpot for r in plan.replicas)


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
