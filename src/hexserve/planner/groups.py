"""Best layouts of device groups, memoised by the group's shape so identical nodes are planned once."""

from __future__ import annotations

from collections.abc import Iterable

from hexserve.planner.layout import best_layout, device_classes, holds_weights
from hexserve.planner.stagecost import CostTable
from hexserve.planner.throughput import Fit
from hexserve.specs.cluster import Device

Group = tuple[Device, ...]


def _signature(table: CostTable, classes: list[Group]) -> tuple:
    """Groups on one node with the same types and counts over the same link cost the same; groups over
    several nodes are told apart by node names (their links differ)."""
    nodes = {c[0].node for c in classes}
    shape = tuple((c[0].type.name, len(c)) for c in classes)
    if len(nodes) == 1:
        return "node", table.cluster.node(classes[0][0].node).intra_link, shape
    return "nodes", tuple((c[0].node, c[0].type.name, len(c)) for c in classes)


def remap(fit: Fit, old: list[Group], new: list[Group]) -> Fit:
    """The same layout on other devices of the same classes."""
    mapping = {a: b for oc, nc in zip(old, new, strict=True) for a, b in zip(oc, nc, strict=True)}
    stages = tuple(tuple(mapping[d] for d in s) for s in fit.stages)
    return Fit(stages, fit.layers, fit.perf)


class GroupScorer:
    """`fit(devices)`: the best layout of one replica over exactly these devices, or None."""

    def __init__(self, table: CostTable, objective: str = "throughput"):
        self.table, self.objective = table, objective
        self._memo: dict[tuple, tuple[list[Group], Fit | None]] = {}
        self.evaluations = 0

    def fit(self, devices: Iterable[Device]) -> Fit | None:
        classes = device_classes(devices)
        if not classes:
            return None
        key = _signature(self.table, classes)
        if key not in self._memo:
            flat = [d for c in classes for d in c]
            found = None
            if holds_weights(self.table, flat):
                found = best_layout(self.table, flat, self.objective)
                self.evaluations += 1
            self._memo[key] = (classes, found)
        old, found = self._memo[key]
        return None if found is None else remap(found, old, classes)

    def throughput(self, devices: Iterable[Device]) -> float:
        found = self.fit(devices)
        return found.perf.tokens_per_s if found else 0.0
