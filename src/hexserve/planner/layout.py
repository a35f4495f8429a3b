"""The best layout of one group of devices: its pipeline stages, each stage's TP degree and its layers.

Candidate stages keep fast links inside a TP group: the devices are cut into classes (one device type
on one node, so every pair in a class shares the node's link), and each class is cut into TP groups of
one degree t from `model.valid_tp_degrees` (the remainder into the widest valid degrees). Different
classes choose different t, which is what makes a layout asymmetric: HexGen's 4xA6000 + 2xA5000 +
2xA4000 becomes TP (4, 2, 2). Stages follow the nodes in cluster order (one cross-node send per node
boundary), forward and backward, or in every distinct order when there are few (the ends hold the
embedding and the LM head, and the order sets which links the hidden states cross). For each
candidate the layer split and micro-batch come from `throughput.fit_throughput` (exact for a given
stage order); the best candidate wins. With many classes the product of per-class choices is searched
by coordinate ascent instead of in full.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable

from hexserve.planner.stagecost import CostTable, Stage
from hexserve.planner.throughput import Fit, fit_latency, fit_throughput
from hexserve.specs.cluster import Device
from hexserve.specs.model import ModelSpec

MAX_COMBINATIONS = 64  # beyond this many per-class choices, coordinate ascent instead of the product
MAX_ORDERS = 24  # stage lists with at most this many distinct orders are tried in every order
GIB = 2**30


def device_classes(devices: Iterable[Device]) -> list[tuple[Device, ...]]:
    """Devices grouped by (node, type), in cluster order."""
    classes: dict[tuple[str, str], list[Device]] = {}
    for d in sorted(devices, key=lambda d: d.index):
        classes.setdefault((d.node, d.type.name), []).append(d)
    return [tuple(c) for c in classes.values()]


def _cut(model: ModelSpec, run: tuple[Device, ...], width: int) -> list[Stage]:
    """Consecutive TP groups of `width`, the remainder in the widest valid degrees."""
    stages, i = [], 0
    while i < len(run):
        w = width if len(run) - i >= width else max(t for t in model.valid_tp_degrees(len(run) - i))
        stages.append(run[i : i + w])
        i += w
    return stages


def class_options(model: ModelSpec, run: tuple[Device, ...]) -> list[list[Stage]]:
    """The ways one class may be cut into TP groups, widest first."""
    return [_cut(model, run, t) for t in sorted(model.valid_tp_degrees(len(run)), reverse=True)]


def _distinct_orders(kinds: list[tuple], limit: int) -> list[list[int]] | None:
    """Positions of every distinct order of a multiset of stage kinds, or None when more than `limit`."""
    orders: list[list[int]] = []

    def extend(prefix: list[int], left: list[int]) -> bool:
        if not left:
            orders.append(prefix)
            return len(orders) <= limit
        seen = set()
        for k, i in enumerate(left):
            if kinds[i] not in seen:
                seen.add(kinds[i])
                if not extend(prefix + [i], left[:k] + left[k + 1 :]):
                    return False
        return True

    return orders if extend([], list(range(len(kinds)))) else None


def _orders(choice: tuple[list[Stage], ...]) -> list[tuple[Stage, ...]]:
    """Stage orders to try: every distinct order of few stages (the ends hold the embedding and the
    head, and the order sets the links crossed), else nodes in cluster order, forward and backward."""
    forward = tuple(s for stages in choice for s in stages)
    kinds = [(s[0].node, s[0].type.name, len(s)) for s in forward]
    orders = _distinct_orders(kinds, MAX_ORDERS)
    if orders is not None:
        return [tuple(forward[i] for i in order) for order in orders]
    backward = tuple(reversed(forward))
    return [forward] if backward == forward else [forward, backward]


def _scorer(objective: str) -> Callable[[Fit], float]:
    if objective == "latency":
        return lambda f: -f.perf.unloaded_latency_s
    return lambda f: f.perf.tokens_per_s


def fit_stages(table: CostTable, stages: tuple[Stage, ...], objective: str = "throughput") -> Fit | None:
    """Layers and micro-batch for stages in a given order, for the objective."""
    return fit_latency(table, stages) if objective == "latency" else fit_throughput(table, stages)


def _best_of_choice(table: CostTable, choice: tuple[list[Stage], ...], objective: str) -> Fit | None:
    score = _scorer(objective)
    fits = [f for order in _orders(choice) if (f := fit_stages(table, order, objective)) is not None]
    return max(fits, key=score, default=None)


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


def best_layout(table: CostTable, devices: Iterable[Device], objective: str = "throughput") -> Fit | None:
    """The best layout of one replica over exactly these devices (None when none fits or meets the SLOs)."""
    devices = list(devices)
    if not devices or not holds_weights(table, devices):
        return None
    options = [class_options(table.model, c) for c in device_classes(devices)]
    combinations = 1
    for o in options:
        combinations *= len(o)
    if combinations > MAX_COMBINATIONS:
        return _coordinate_ascent(table, options, objective)
    score = _scorer(objective)
    fits = [f for choice in itertools.product(*options) if (f := _best_of_choice(table, choice, objective))]
    return max(fits, key=score, default=None)


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
