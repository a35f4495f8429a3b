"""The best layout of one group of devices: its pipeline stages, each stage's TP degree and its layers.

Candidate TP groups and stage orders come from `candidates.py`: pure choices (each class, one type on
one node, cut into groups of one valid degree; classes choose independently, which makes layouts
asymmetric) and pooled choices (TP groups across types or nodes, where a class's remainder or a lone
device pays more as part of a wider group). For each candidate order the layer split and micro-batch
come from `throughput.fit_throughput` (exact for a given order); the best candidate wins. With many
classes the product of pure per-class choices is searched by coordinate ascent instead of in full, and
at most MAX_POOLED pooled choices are tried, those with the smallest pools.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from hexserve.planner.candidates import Choice, class_options, pooled_choices, stage_orders
from hexserve.planner.stagecost import CostTable, Stage
from hexserve.planner.throughput import Fit, fit_latency, fit_throughput
from hexserve.specs.cluster import Device

__all__ = ["best_layout", "class_options", "device_classes", "fit_stages", "holds_weights", "why_no_layout"]

MAX_COMBINATIONS = 64  # beyond this many per-class choices, coordinate ascent instead of the product
MAX_POOLED = 64  # pooled choices tried per group, smallest pools first
GIB = 2**30


def device_classes(devices: Iterable[Device]) -> list[tuple[Device, ...]]:
    """Devices grouped by (node, type), in cluster order."""
    classes: dict[tuple[str, str], list[Device]] = {}
    for d in sorted(devices, key=lambda d: d.index):
        classes.setdefault((d.node, d.type.name), []).append(d)
    return [tuple(c) for c in classes.values()]


def _scorer(objective: str) -> Callable[[Fit], float]:
    if objective == "latency":
        return lambda f: -f.perf.unloaded_latency_s
    return lambda f: f.perf.tokens_per_s


def fit_stages(table: CostTable, stages: tuple[Stage, ...], objective: str = "throughput") -> Fit | None:
    """Layers and micro-batch for stages in a given order, for the objective."""
    return fit_latency(table, stages) if objective == "latency" else fit_throughput(table, stages)


def _best_of_choice(table: CostTable, choice: Choice, objective: str) -> Fit | None:
    score = _scorer(objective)
    fits = [f for order in stage_orders(choice) if (f := fit_stages(table, order, objective)) is not None]
    return max(fits, key=score, default=None)


def _best(fits: Iterable[Fit | None], objective: str) -> Fit | None:
    return max((f for f in fits if f is not None), key=_scorer(objective), default=None)


def _coordinate_ascent(table: CostTable, options: list[list[list[Stage]]], objective: str) -> Fit | None:
    score = _scorer(objective)
    pick = [0] * len(options)
    best = _best_of_choice(table, tuple(o[0] for o in options), objective)
    for _ in range(3):
        improved = False
        for k, opts in enumerate(options):
            for i in range(len(opts)):
                trial = pick[:k] + [i] + pick[k + 1 :]
                fit = _best_of_choice(table, tuple(o[t] for o, t in zip(options, trial, strict=True)), objective)
                if fit is not None and (best is None or score(fit) > score(best)):
                    best, pick, improved = fit, trial, True
        if not improved:
            break
    return best


def holds_weights(table: CostTable, devices: Iterable[Device]) -> bool:
    """A quick necessary condition: the devices' usable memory together exceeds the weights."""
    usable = sum(d.type.memory_bytes * table.calibration.for_type(d.type.name).memory_utilization for d in devices)
    return usable > table.model.weights_bytes


def _pure(table: CostTable, classes: list[tuple[Device, ...]], objective: str) -> Fit | None:
    options = [class_options(table.model, c) for c in classes]
    combinations = 1
    for o in options:
        combinations *= len(o)
    if combinations > MAX_COMBINATIONS:
        return _coordinate_ascent(table, options, objective)
    return _best((_best_of_choice(table, c, objective) for c in itertools.product(*options)), objective)


def _pooled(table: CostTable, classes: list[tuple[Device, ...]], objective: str) -> Fit | None:
    if len(classes) < 2:
        return None
    choices = pooled_choices(table.model, classes, MAX_POOLED)
    return _best((_best_of_choice(table, c, objective) for c in choices), objective)


def best_layout(
    table: CostTable, devices: Iterable[Device], objective: str = "throughput", mixed: bool = True
) -> Fit | None:
    """The best layout of one replica over exactly these devices (None when none fits or meets the SLOs);
    `mixed=False` keeps every TP group inside one class (one type on one node), as HexGen's search did."""
    devices = list(devices)
    if not devices or not holds_weights(table, devices):
        return None
    classes = device_classes(devices)
    pooled = _pooled(table, classes, objective) if mixed else None
    return _best((_pure(table, classes, objective), pooled), objective)


def why_no_layout(table: CostTable, devices: Iterable[Device]) -> str:
    """In words, why a group has no feasible layout."""
    devices = list(devices)
    m = table.model
    usable = sum(d.type.memory_bytes * table.calibration.for_type(d.type.name).memory_utilization for d in devices)
    if usable <= m.weights_bytes:
        return (
            f"{m.name} needs {m.weights_bytes / GIB:.1f} GiB of weights but the {len(devices)} devices hold "
            f"{usable / GIB:.1f} GiB usable: {(m.weights_bytes - usable) / GIB:.1f} GiB short"
        )
    return "no layout both fits the weights, workspace and one micro-batch of KV and meets the SLOs"
