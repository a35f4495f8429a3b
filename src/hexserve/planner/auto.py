"""`--mode auto`: plan colocated (HexGen) and disaggregated (HexGen-2), keep the better, say why.

"Better" is the objective's measure: output tokens/s for throughput, tokens/s per $/h for per-dollar.
The latency objective has no disaggregated counterpart (the disaggregated planner maximises the flow),
so auto keeps the colocated plan there. When one mode has no feasible plan, the other is kept.
"""

from __future__ import annotations

from dataclasses import replace

from hexserve.costmodel.calibration import Calibration
from hexserve.errors import SpecError
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.hexgen2 import TIME_BUDGET_S, plan_disaggregated
from hexserve.planner.plan import Plan
from hexserve.planner.workload import Workload
from hexserve.specs.cluster import Cluster
from hexserve.specs.model import ModelSpec


def measure(plan: Plan, objective: str) -> float:
    p = plan.predicted
    if p is None:
        return 0.0
    if objective == "per-dollar":
        return p.tokens_per_s / p.price_per_hour if p.price_per_hour > 0 else 0.0
    return p.tokens_per_s


def _describe(plan: Plan, objective: str) -> str:
    unit = "tok/s per $/h" if objective == "per-dollar" else "output tok/s"
    return f"{plan.planner} {measure(plan, objective):,.1f} {unit}"


def choose(colocated: Plan, disaggregated: Plan, objective: str) -> Plan:
    """The better of two plans by the objective, its notes saying why."""
    a, b = measure(colocated, objective), measure(disaggregated, objective)
    winner, loser = (disaggregated, colocated) if b > a else (colocated, disaggregated)
    gain = max(a, b) / min(a, b) - 1 if min(a, b) > 0 else float("inf")
    mode = "disaggregated" if winner is disaggregated else "colocated"
    reason = (
        f"auto: kept {mode}: {_describe(winner, objective)} vs {_describe(loser, objective)} "
        f"({gain:+.1%}) for prompt {winner.workload.prompt_len} / output {winner.workload.output_len} tokens"
    )
    return replace(winner, notes=winner.notes + (reason,))


def plan_auto(
    model: ModelSpec,
    cluster: Cluster,
    workload: Workload,
    calibration: Calibration,
    objective: str = "throughput",
    seed: int = 0,
    time_budget_s: float = TIME_BUDGET_S,
) -> Plan:
    colocated = plan_colocated(model, cluster, workload, calibration, objective, seed)
    if objective == "latency":
        note = "auto: kept colocated: the latency objective has no disaggregated plan (HexGen-2 maximises flow)"
        return replace(colocated, notes=colocated.notes + (note,))
    try:
        disaggregated = plan_disaggregated(model, cluster, workload, calibration, seed, time_budget_s)
    except SpecError as e:
        note = f"auto: kept colocated: no disaggregated plan ({e})"
        return replace(colocated, notes=colocated.notes + (note,))
    return choose(colocated, disaggregated, objective)
