"""Baselines the planner is compared with; each says what is short when it does not fit.

- symmetric: every stage the same TP degree and the same number of layers, replicas of TP x PP
  consecutive devices (HexGen's "symmetric TP" is PP=1, its "plain PP" is TP=1);
- homogeneous (vLLM-like): one device type per replica, TP inside a node, PP across nodes with equal
  layers, as few stages as fit;
- per-node: one replica per node, laid out by the planner's own layout search.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hexserve.errors import SpecError
from hexserve.planner.layout import best_layout, device_classes, why_no_layout
from hexserve.planner.split import equal_split
from hexserve.planner.stagecost import CostTable, Stage
from hexserve.planner.throughput import Fit, fit_throughput
from hexserve.specs.cluster import Device

BASELINES = ("symmetric", "homogeneous", "per-node")
GIB = 2**30


@dataclass
class BaselineResult:
    name: str
    fits: list[Fit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return sum(f.perf.tokens_per_s for f in self.fits)


def shortfall(table: CostTable, stages: tuple[Stage, ...], layers: list[int]) -> str:
    """The worst memory shortfall of a fixed layout holding one micro-batch of one sequence per stage."""
    kv_tokens = len(stages) * table.workload.seq_len
    worst: tuple[int, Device | None] = (0, None)
    for j, (stage, n) in enumerate(zip(stages, layers, strict=True)):
        for d, use in zip(stage, table.memory(stage, n, j == 0, j == len(stages) - 1), strict=True):
            worst = max(worst, (use.shortfall(kv_tokens), d), key=lambda x: x[0])
    short, device = worst
    if device is None:
        return "fits in memory but misses the SLOs"
    return f"{device.name} ({device.type.name}) is short by {short / GIB:.2f} GiB"


def fixed_layout(
    table: CostTable, devices: list[Device], tp: int, layers_of: list[int] | None = None
) -> tuple[Fit | None, str]:
    stages = tuple(tuple(devices[i : i + tp]) for i in range(0, len(devices), tp))
    layers = layers_of or equal_split(len(stages), table.model.num_layers)
    fit = fit_throughput(table, stages, layers)
    return fit, "" if fit else shortfall(table, stages, layers)


def symmetric(table: CostTable, tp: int | None = None, pp: int | None = None) -> BaselineResult:
    """The best symmetric layout (or the one given by tp and pp), replicated over the cluster."""
    devices = list(table.cluster.devices)
    n, valid = len(devices), table.model.valid_tp_degrees(len(devices))
    if tp is not None and tp not in valid:
        raise SpecError(f"--tp: {table.model.name} cannot be split {tp} ways; use one of {', '.join(map(str, valid))}")
    shapes = [(t, p) for t in valid for p in range(1, n // t + 1) if (tp in (None, t)) and (pp in (None, p))]
    if not shapes:
        raise SpecError(f"--tp/--pp: {n} devices cannot form a TP x PP replica of {tp or '?'} x {pp or '?'}")
    best = BaselineResult("symmetric")
    for t, p in shapes:
        size = t * p
        if p > table.model.num_layers:
            continue
        trial = BaselineResult("symmetric")
        for start in range(0, n - size + 1, size):
            fit, why = fixed_layout(table, devices[start : start + size], t)
            if fit:
                trial.fits.append(fit)
            else:
                trial.problems.append(f"TP={t} x PP={p} on devices {start}-{start + size - 1}: {why}")
        if not trial.fits and (tp is not None or pp is not None or p == 1 or t == 1):
            best.problems += trial.problems[:1]
        if trial.tokens_per_s > best.tokens_per_s:
            best = BaselineResult("symmetric", trial.fits, trial.problems)
    return best


def homogeneous(table: CostTable) -> BaselineResult:
    """vLLM-like: per device type, TP within each node, the fewest equal pipeline stages that fit."""
    result = BaselineResult("homogeneous")
    by_type: dict[str, list[tuple[Device, ...]]] = {}
    for c in device_classes(table.cluster.devices):
        by_type.setdefault(c[0].type.name, []).append(c)
    for type_name, classes in by_type.items():
        t = max(table.model.valid_tp_degrees(min(len(c) for c in classes)))
        groups = [c[i : i + t] for c in classes for i in range(0, len(c) - t + 1, t)]
        for p in range(1, len(groups) + 1):
            fits = []
            for start in range(0, len(groups) - p + 1, p):
                fit, why = fixed_layout(table, [d for g in groups[start : start + p] for d in g], t)
                if fit:
                    fits.append(fit)
            if fits:
                result.fits += fits
                break
        else:
            devices = [d for g in groups for d in g]
            _, why = fixed_layout(table, devices, t)
            result.problems.append(f"{type_name} TP={t} x PP={len(groups)}: {why}")
    return result


def per_node(table: CostTable) -> BaselineResult:
    """One replica per node, each laid out by the planner's layout search."""
    result = BaselineResult("per-node")
    for node in table.cluster.nodes:
        fit = best_layout(table, node.devices)
        if fit:
            result.fits.append(fit)
        else:
            result.problems.append(f"node {node.name}: {why_no_layout(table, node.devices)}")
    return result


def run_baseline(table: CostTable, name: str, tp: int | None = None, pp: int | None = None) -> BaselineResult:
    if name == "symmetric":
        return symmetric(table, tp, pp)
    if name == "homogeneous":
        return homogeneous(table)
    if name == "per-node":
        return per_node(table)
    raise SpecError(f"--baseline: unknown baseline {name!r}; use one of {', '.join(BASELINES)}")
