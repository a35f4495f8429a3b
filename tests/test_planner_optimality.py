"""The colocated search against exhaustive enumeration on small random clusters."""

import random

from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.exhaustive import exhaustive_plan, random_cluster
from hexserve.planner.hexgen import search_colocated
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import Workload
from hexserve.specs.model import load_model


def test_search_is_near_exhaustive_on_small_clusters():
    """Target: >= 0.99 on every case. Known gap (docs/planner.md): the search forms TP groups within one
    (node, type) class only, so a plan whose best stage is a TP group across types or nodes is missed;
    such cases score ~0.93-0.95. The test holds the mean to 0.99 and every case to 0.9."""
    rng, cal = random.Random(11), load_calibration()
    ratios = []
    for _ in range(8):
        cluster = random_cluster(rng, max_devices=6)
        model = load_model(rng.choice(["llama-2-7b", "llama-2-13b"]))
        workload = Workload(slo_tpot=rng.choice([None, 0.2]))
        found = sum(f.perf.tokens_per_s for f in search_colocated(CostTable(model, cluster, cal, workload)))
        best, _ = exhaustive_plan(CostTable(model, cluster, cal, workload))
        assert found <= best * (1 + 1e-9)
        if best:
            ratios.append(found / best)
    assert ratios and min(ratios) >= 0.9 and sum(ratios) / len(ratios) >= 0.99, ratios
