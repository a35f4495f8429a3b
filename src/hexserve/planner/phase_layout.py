"""The best layout of one group of devices for one phase, memoised by the group's shape.

The candidates are those of the colocated layout search (`layout.py`): each class (one type on one
node) is cut into TP groups of one valid degree, classes choose independently (asymmetric layouts),
and the stages are tried in every distinct order when there are at most MAX_PERMUTED of them, else by
node forward and backward. Each candidate is scored by `phase.fit_prefill` or `phase.fit_decode`
(exact layer split and micro-batch for that order); beyond MAX_COMBINATIONS per-class choices,
coordinate ascent over the classes. Groups on one node with the same type counts over the same link
score the same, so identical nodes are laid out once.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from hexserve.planner.layout import class_options, device_classes, holds_weights
from hexserve.planner.phase import PhaseFit, PrefillLines, fit_decode, fit_prefill
from hexserve.planner.stagecost import CostTable, Stage
from hexserve.specs.cluster import Device

MAX_COMBINATIONS = 64
MAX_PERMUTED = 4  # at most 4! = 24 orders
Group = tuple[Device, ...]


def _orders(stages: tuple[Stage, ...]) -> list[tuple[Stage, ...]]:
    """Orders worth trying: the ends hold the embedding and the head, and the order sets which links the
    hidden states cross. Stages of one kind (node, type, width) are interchangeable."""
    if len(stages) <= MAX_PERMUTED:
        seen, orders = set(), []
        for order in itertools.permutations(stages):
            kind = tuple((s[0].node, s[0].type.name, len(s)) for s in order)
            if kind not in seen:
                seen.add(kind)
                orders.append(order)
        return orders
    backward = tuple(reversed(stages))
    return [stages] if backward == stages else [stages, backward]


class PhaseScorer:
    """`fit(devices, phase)`: the best layout of one phase replica over exactly these devices, or None."""

    def __init__(self, table: CostTable):
        self.table = table
        self.prefill_lines = PrefillLines(table)
        self._memo: dict[tuple, tuple[list[Group], PhaseFit | None]] = {}
        self.evaluations = 0

    def _signature(self, classes: list[Group], phase: str) -> tuple:
        nodes = {c[0].node for c in classes}
        if len(nodes) == 1:
            link = self.table.cluster.node(classes[0][0].node).intra_link
            return phase, link, tuple((c[0].type.name, len(c)) for c in classes)
        return phase, tuple((c[0].node, c[0].type.name, len(c)) for c in classes)

    def fit(self, devices: Iterable[Device], phase: str) -> PhaseFit | None:
        classes = device_classes(devices)
        if not classes:
            return None
        key = self._signature(classes, phase)
        if key not in self._memo:
            flat = [d for c in classes for d in c]
            found = self._search(flat, phase) if holds_weights(self.table, flat) else None
            self._memo[key] = (classes, found)
        old, found = self._memo[key]
        if found is None:
            return None
        mapping = {a: b for oc, nc in zip(old, classes, strict=True) for a, b in zip(oc, nc, strict=True)}
        return PhaseFit(tuple(tuple(mapping[d] for d in s) for s in found.stages), found.layers, found.perf)

    def rate(self, devices: Iterable[Device], phase: str) -> float:
        found = self.fit(devices, phase)
        return found.requests_per_s if found else 0.0

    # ------------------------------------------------------------------ the search

    def score_stages(self, stages: tuple[Stage, ...], phase: str, layers: tuple[int, ...] | None = None):
        self.evaluations += 1
        if phase == "prefill":
            return fit_prefill(self.table, self.prefill_lines, stages, layers)
        return fit_decode(self.table, stages, layers)

    def _best_of_choice(self, choice: tuple[list[Stage], ...], phase: str) -> PhaseFit | None:
        forward = tuple(s for stages in choice for s in stages)
        fits = [f for order in _orders(forward) if (f := self.score_stages(order, phase)) is not None]
        return max(fits, key=lambda f: f.requests_per_s, default=None)

    def _search(self, devices: list[Device], phase: str) -> PhaseFit | None:
        options = [class_options(self.table.model, c) for c in device_classes(devices)]
        combinations = 1
        for o in options:
            combinations *= len(o)
        if combinations <= MAX_COMBINATIONS:
            fits = [f for ch in itertools.product(*options) if (f := self._best_of_choice(ch, phase)) is not None]
            return max(fits, key=lambda f: f.requests_per_s, default=None)
        return self._coordinate_ascent(options, phase)

    def _coordinate_ascent(self, options: list[list[list[Stage]]], phase: str) -> PhaseFit | None:
        pick = [0] * len(options)
        best = self._best_of_choice(tuple(o[0] for o in options), phase)
        for _ in range(3):
            improved = False
            for k, opts in enumerate(options):
                for i in range(len(opts)):
                    trial = pick[:k] + [i] + pick[k + 1 :]
                    fit = self._best_of_choice(tuple(o[t] for o, t in zip(options, trial, strict=True)), phase)
                    if fit is not None and (best is None or fit.requests_per_s > best.requests_per_s):
                        best, pick, improved = fit, trial, True
            if not improved:
                break
        return best
