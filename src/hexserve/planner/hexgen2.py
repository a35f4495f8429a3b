"""HexGen-2's disaggregated planner: graph partition, max-flow, iterative refinement.

1. Graph partition (`graph_partition.py`): recursive spectral bisection of the device graph refined by
   Kernighan-Lin gives groups that each hold a replica, at several granularities (HEADROOMS: the
   memory a group must hold, in multiples of the weights); each group's prefill and decode rates order
   the groups by prefill affinity and every cut of that order is a candidate prefill/decode split.
2. Max-flow (`maxflow.py`, via `disagg_eval.py`): each group laid out for its phase, KV links priced,
   preflow-push; the best (granularity, split) by flow, ties to the larger P<->D cut bandwidth, is the
   start.
3. Refinement (`refine.py`): bottleneck-guided moves kept only when the flow grows.

Ablations switch off phase 1 (random groups and random roles, `random_partition`) or phase 3.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from hexserve.costmodel.calibration import Calibration
from hexserve.errors import SpecError
from hexserve.planner.disagg_build import plan_from_evaluation
from hexserve.planner.disagg_eval import Evaluation, Evaluator, Group, canonical
from hexserve.planner.graph_partition import (
    coarsen,
    cut_bandwidth,
    initial_partition,
    random_partition,
    role_candidates,
)
from hexserve.planner.layout import why_no_layout
from hexserve.planner.plan import Plan
from hexserve.planner.refine import RefineLog, Refiner
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import Workload
from hexserve.specs.cluster import Cluster
from hexserve.specs.model import ModelSpec

HEADROOMS = (1.1, 1.5, 2.5)  # group memory / weights: small groups (many replicas) to large (big KV pools)
TIME_BUDGET_S = 25.0  # a safety net: the evaluation budgets normally stop first (deterministic)


@dataclass(frozen=True)
class DisaggResult:
    evaluation: Evaluation
    start_value: float  # requests/s after phases 1 and 2 (of the start the kept refinement began from)
    log: RefineLog | None  # phase 3 (None when switched off)
    seconds: float
    evaluations: int  # assignments scored by max-flow

    @property
    def requests_per_s(self) -> float:
        return self.evaluation.value

    def notes(self) -> tuple[str, ...]:
        lines = [f"phases 1-2: {self.start_value:.3f} req/s"]
        if self.log is not None:
            # No wall-clock time here: the notes go into the plan file, which must not change between
            # two runs with the same seed.
            lines.append(
                f"phase 3: {len(self.log.moves)} moves kept of {self.log.evaluations} tried, "
                f"stopped by {self.log.stop}"
            )
            lines += [f"kept {m.kind}: {m.text} ({m.before:.3f} -> {m.after:.3f} req/s)" for m in self.log.moves]
        return tuple(lines)


def assign_roles(evaluator: Evaluator, groups: list[Group]) -> Evaluation | None:
    """The best prefill/decode split of these groups by max-flow (secondary partition)."""
    if len(groups) < 2:
        return None
    rates_p = [evaluator.rate(g, "prefill") for g in groups]
    rates_d = [evaluator.rate(g, "decode") for g in groups]
    coarse = coarsen(evaluator.table.cluster, groups)
    best, best_key = None, None
    for roles in role_candidates(rates_p, rates_d):
        e = evaluator.evaluate(canonical(groups, roles))
        key = (round(e.value, 9), cut_bandwidth(coarse, roles))
        if best_key is None or key > best_key:
            best, best_key = e, key
    return best


def _random_roles(groups: list[Group], rng: np.random.Generator) -> list[str]:
    roles = ["prefill" if x else "decode" for x in rng.integers(0, 2, len(groups))]
    if len(set(roles)) < 2 and len(groups) >= 2:  # a flow needs both sides
        roles[int(rng.integers(len(groups)))] = "decode" if roles[0] == "prefill" else "prefill"
    return roles


def starting_points(evaluator: Evaluator, phase1: bool, rng: np.random.Generator, seed: int) -> list[Evaluation]:
    """Phases 1 and 2 (or the random stand-in for phase 1) at every granularity, best flow first."""
    found: dict[frozenset, Evaluation] = {}
    for headroom in HEADROOMS:
        if phase1:
            e = assign_roles(evaluator, initial_partition(evaluator.table, headroom, seed))
        else:
            groups = random_partition(evaluator.table, headroom, rng)
            e = evaluator.evaluate(canonical(groups, _random_roles(groups, rng))) if len(groups) >= 2 else None
        if e is not None:
            found.setdefault(e.assignment.key(), e)
    return sorted(found.values(), key=lambda e: -e.value)


def search_disaggregated(
    table: CostTable, seed: int = 0, time_budget_s: float = TIME_BUDGET_S, phase1: bool = True, phase3: bool = True
) -> DisaggResult | None:
    """The best disaggregated assignment found (None when no two groups can hold a replica each).

    Phase 3 refines every distinct starting point (one per granularity), each with an equal share of
    the time budget, and keeps the best."""
    began = time.perf_counter()
    evaluator, rng = Evaluator(table), np.random.default_rng(seed)
    starts = starting_points(evaluator, phase1, rng, seed)
    if not starts:
        return None
    best, start_value, log = starts[0], starts[0].value, None
    if phase3:
        for n, start in enumerate(starts):
            left = time_budget_s - (time.perf_counter() - began)
            found, found_log = Refiner(evaluator, seed + n, max(left / (len(starts) - n), 0.0)).run(start)
            if log is None or found.value > best.value:
                best, start_value, log = found, start.value, found_log
    return DisaggResult(best, start_value, log, time.perf_counter() - began, evaluator.flows)


def plan_disaggregated(
    model: ModelSpec,
    cluster: Cluster,
    workload: Workload,
    calibration: Calibration,
    seed: int = 0,
    time_budget_s: float = TIME_BUDGET_S,
) -> Plan:
    """HexGen-2's disaggregated plan; a one-line SpecError when no prefill/decode pair fits."""
    table = CostTable(model, cluster, calibration, workload)
    result = search_disaggregated(table, seed, time_budget_s)
    if result is None or result.requests_per_s <= 0:
        why = why_no_layout(table, cluster.devices)
        raise SpecError(
            f"plan: no disaggregated plan of {model.name} on {cluster.name}: it needs two groups that each hold a "
            f"replica and meet the SLOs ({why})"
        )
    return plan_from_evaluation(table, result.evaluation, "hexgen2", seed, result.notes())
