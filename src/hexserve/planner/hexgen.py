"""HexGen's colocated search: split the cluster into replicas and lay each one out.

1. Each node alone: the exact count-vector DP of `partition.py` over the node's classes gives its best
   set of replicas (devices that help no replica stay unused).
2. Graph-aware merging: nodes are the vertices of a graph whose edge weight is the gain of planning the
   two units together (the DP over their union; in unions of more than OPEN_PAIR_STATES count vectors a
   cross-node replica is only tried where a side could not hold the weights alone, or when it takes the
   whole union and a side leaves devices unused); networkx's max-weight matching merges the best disjoint pairs,
   and rounds repeat until no pair gains. Units that cannot hold a replica at all are merged along their
   fastest links until they can. Large unions keep both sides' replicas and re-plan only their leftovers.
3. Local search, ordered by the seed: unused devices join the replica they help most, and each replica
   and pairs of replicas are re-split by the DP over their devices.

Objective: the sum of the replicas' output tokens/s (each layout from `layout.best_layout` under the
workload's SLOs); "per-dollar" maximises tokens/s per $/h of the devices used, by Dinkelbach's method
(repeat the search with value = tokens/s - lambda * price, lambda = the last plan's ratio); "latency"
lays every replica out for its lowest unloaded latency and minimises the mean unloaded latency of a
request routed by the plan's shares (sum of rate_i * latency_i over sum of rate_i), again by Dinkelbach:
value = rate * (lambda - latency), lambda = the last plan's mean. Replicas slower than the mean only
raise it, so devices that could only add slower replicas stay unused (docs/planner.md says why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import networkx as nx
import numpy as np

from hexserve.costmodel.calibration import Calibration
from hexserve.errors import SpecError
from hexserve.planner.build import plan_from_fits
from hexserve.planner.groups import Group, GroupScorer
from hexserve.planner.layout import device_classes, holds_weights, why_no_layout
from hexserve.planner.partition import Vector, best_partition, state_count
from hexserve.planner.plan import Plan
from hexserve.planner.stagecost import CostTable
from hexserve.planner.throughput import Fit
from hexserve.planner.workload import Workload, check_objective
from hexserve.specs.cluster import Cluster, Device
from hexserve.specs.model import ModelSpec

NODE_STATES = 5000  # a node's own DP always runs; beyond this many count vectors it is split by type
UNION_STATES = 100  # the DP over two units runs when their union has at most this many count vectors
OPEN_PAIR_STATES = 36  # up to this many, it tries every cross-node replica, not only the necessary ones
REFINE_ROUNDS = 3
DINKELBACH_ROUNDS = 6
LATENCY_TIE = 1e-6  # replicas exactly as fast as the mean still count: identical replicas are all kept
PAIRS_PER_ROUND = 24
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Unit:
    """Nodes planned together and their replicas (device groups)."""

    nodes: frozenset[str]
    devices: tuple[Device, ...]
    value: float
    replicas: tuple[Group, ...]

    @property
    def leftovers(self) -> tuple[Device, ...]:
        used = {d for r in self.replicas for d in r}
        return tuple(d for d in self.devices if d not in used)


class ColocatedSearch:
    def __init__(
        self, scorer: GroupScorer, seed: int = 0, price_weight: float = 0.0, latency_level: float | None = None
    ):
        self.scorer, self.table = scorer, scorer.table
        self.rng = np.random.default_rng(seed)
        self.price_weight = price_weight  # Dinkelbach's lambda: $/h are worth this many tokens/s
        self.latency_level = latency_level  # Dinkelbach's lambda for the mean latency (None: throughput)
        self._unions: dict[frozenset[str], Unit] = {}

    # ------------------------------------------------------------------ values

    def value(self, group: Group) -> float:
        if self.latency_level is not None:
            fit = self.scorer.fit(group)
            return 0.0 if fit is None else fit.perf.requests_per_s * (self.latency_level - fit.perf.unloaded_latency_s)
        tokens = self.scorer.throughput(group)
        if tokens <= 0:
            return 0.0
        return tokens - self.price_weight * sum(d.price_per_hour for d in group)

    def _part_value(self, classes: list[Group], u: Vector, closed: Callable[[Iterable[bool]], bool] | None) -> float:
        parts: dict[str, list[Device]] = {}
        for c, k in zip(classes, u, strict=True):
            parts.setdefault(c[0].node, []).extend(c[:k])
        if closed is not None and len(parts) > 1 and closed(holds_weights(self.table, p) for p in parts.values()):
            return 0.0  # a cross-node replica of sides that could be replicas alone: assumed better apart
        return self.value(tuple(d for c, k in zip(classes, u, strict=True) for d in c[:k]))

    def solve(
        self, devices: tuple[Device, ...], relaxed: bool = False, whole: bool = False
    ) -> tuple[float, tuple[Group, ...]]:
        """The best replicas over these devices by the DP over their classes. Over more than
        OPEN_PAIR_STATES count vectors, a cross-node replica is skipped when any side could hold the
        weights alone (when every side could, if `relaxed`: re-splitting replicas, where one side is often
        a lone device that completes the other), except all the devices as one replica when `whole`."""
        classes = device_classes(devices)
        counts = tuple(len(c) for c in classes)
        closed = None if state_count(counts) <= OPEN_PAIR_STATES else all if relaxed else any
        total, parts = best_partition(
            counts, lambda u: self._part_value(classes, u, None if whole and u == counts else closed)
        )
        taken = [0] * len(classes)
        groups = []
        for u in parts:
            pairs = enumerate(zip(classes, u, strict=True))
            groups.append(tuple(d for i, (c, k) in pairs for d in c[taken[i] : taken[i] + k]))
            taken = [t + k for t, k in zip(taken, u, strict=True)]
        return total, tuple(groups)

    def _total(self, groups: tuple[Group, ...]) -> float:
        return sum(self.value(g) for g in groups)

    # ------------------------------------------------------------------ phase 1 and 2

    def node_unit(self, name: str) -> Unit:
        devices = self.table.cluster.node(name).devices
        counts = tuple(len(c) for c in device_classes(devices))
        if state_count(counts) <= NODE_STATES:
            value, groups = self.solve(devices)
        else:  # a node of very many classes: plan each type apart
            groups = tuple(g for c in device_classes(devices) for g in self.solve(c)[1])
            value = self._total(groups)
        return Unit(frozenset([name]), devices, value, groups)

    def union(self, a: Unit, b: Unit) -> Unit:
        key = a.nodes | b.nodes
        if key not in self._unions:
            devices = tuple(sorted(a.devices + b.devices, key=lambda d: d.index))
            if state_count(tuple(len(c) for c in device_classes(devices))) <= UNION_STATES:
                # one replica over the whole union is worth a layout when a side leaves devices unused
                value, groups = self.solve(devices, whole=bool(a.leftovers or b.leftovers))
            else:
                groups = a.replicas + b.replicas + self._leftover_groups(a.leftovers + b.leftovers)
                value = self._total(groups)
            self._unions[key] = Unit(key, devices, value, groups)
        return self._unions[key]

    def _leftover_groups(self, leftovers: tuple[Device, ...]) -> tuple[Group, ...]:
        if not leftovers:
            return ()
        if state_count(tuple(len(c) for c in device_classes(leftovers))) <= UNION_STATES:
            return self.solve(leftovers)[1]
        whole = tuple(sorted(leftovers, key=lambda d: d.index))
        return (whole,) if self.value(whole) > 0 else ()

    def _bandwidth(self, a: Unit, b: Unit) -> float:
        return self.table.cluster.link(a.devices[0], b.devices[0]).bandwidth_gbps

    def merge_round(self, units: list[Unit]) -> list[Unit] | None:
        graph = nx.Graph()
        for i in self.rng.permutation(len(units)):
            graph.add_node(int(i))
        for i in range(len(units)):
            for j in range(i + 1, len(units)):
                a, b = units[i], units[j]
                gain = self.union(a, b).value - a.value - b.value
                if gain > TOLERANCE * max(1.0, a.value + b.value):
                    graph.add_edge(i, j, weight=gain)
                elif a.value == 0 and b.value == 0:  # neither holds a replica: grow along fast links
                    graph.add_edge(i, j, weight=1e-6 * self._bandwidth(a, b))
        matching = nx.max_weight_matching(graph)
        if not matching:
            return None
        merged = {i for pair in matching for i in pair}
        keep = [u for i, u in enumerate(units) if i not in merged]
        return keep + [self.union(units[i], units[j]) for i, j in sorted(tuple(sorted(p)) for p in matching)]

    # ------------------------------------------------------------------ phase 3

    def _adopt_leftovers(self, groups: list[Group], unused: list[Device]) -> bool:
        improved = False
        for k in self.rng.permutation(len(unused)):
            d = unused[k]
            gains = [(self.value(g + (d,)) - self.value(g), i) for i, g in enumerate(groups)]
            gain, i = max(gains, default=(0.0, -1))
            if gain > TOLERANCE:
                groups[i] = tuple(sorted(groups[i] + (d,), key=lambda x: x.index))
                improved = True
        return improved

    def _resplit(self, groups: list[Group], i: int, j: int) -> bool:
        """Re-plan replicas i and j (or replica i alone when i == j) by the DP over their devices."""
        if i >= len(groups) or j >= len(groups):
            return False
        union = tuple(sorted(groups[i] + (groups[j] if j != i else ()), key=lambda d: d.index))
        if state_count(tuple(len(c) for c in device_classes(union))) > UNION_STATES:
            return False
        value, split = self.solve(union, relaxed=True)
        before = self.value(groups[i]) + (self.value(groups[j]) if j != i else 0.0)
        if value <= before + TOLERANCE * max(1.0, value):
            return False
        groups[:] = [g for n, g in enumerate(groups) if n not in (i, j)] + list(split)
        return True

    def _resplit_pairs(self, groups: list[Group]) -> bool:
        """Each replica alone (a merge may have joined what is better apart), then pairs in seed order."""
        improved = False
        for i in self.rng.permutation(len(groups)):
            improved |= self._resplit(groups, int(i), int(i))
        pairs = [(i, j) for i in range(len(groups)) for j in range(i + 1, len(groups))]
        for k in self.rng.permutation(len(pairs))[:PAIRS_PER_ROUND]:
            improved |= self._resplit(groups, *pairs[k])
        return improved

    def refine(self, groups: list[Group]) -> list[Group]:
        for _ in range(REFINE_ROUNDS):
            used = {d for g in groups for d in g}
            unused = [d for d in self.table.cluster.devices if d not in used]
            if not (self._adopt_leftovers(groups, unused) | self._resplit_pairs(groups)):
                break
        return groups

    # ------------------------------------------------------------------ all phases

    def run(self) -> list[Group]:
        units = [self.node_unit(n.name) for n in self.table.cluster.nodes]
        while len(units) > 1 and (merged := self.merge_round(units)) is not None:
            units = merged
        groups = [g for u in units for g in u.replicas]
        return sorted(self.refine(groups), key=lambda g: g[0].index)


def search_colocated(table: CostTable, objective: str = "throughput", seed: int = 0) -> list[Fit]:
    """The replicas of the best colocated plan found, each with its layout (empty when nothing fits)."""
    scorer = GroupScorer(table, "latency" if objective == "latency" else "throughput")
    groups = ColocatedSearch(scorer, seed).run()
    if objective == "per-dollar":
        groups = _dinkelbach(scorer, seed, groups)
    elif objective == "latency":
        groups = _least_mean_latency(scorer, seed, groups)
    fits = [scorer.fit(g) for g in groups]
    return [f for f in fits if f is not None]


def _ratio(scorer: GroupScorer, groups: list[Group]) -> float:
    price = sum(d.price_per_hour for g in groups for d in g)
    return sum(scorer.throughput(g) for g in groups) / price if price > 0 else 0.0


def _dinkelbach(scorer: GroupScorer, seed: int, groups: list[Group]) -> list[Group]:
    """Maximise tokens/s per $/h: re-search with the price weighed at the best ratio so far until it stops
    rising (each round's plan is at least as good a ratio as the last)."""
    ratio = _ratio(scorer, groups)
    for _ in range(DINKELBACH_ROUNDS):
        trial = ColocatedSearch(scorer, seed, price_weight=ratio).run()
        trial_ratio = _ratio(scorer, trial)
        if trial_ratio <= ratio * (1 + 1e-9):
            break
        groups, ratio = trial, trial_ratio
    return groups


def mean_latency(scorer: GroupScorer, groups: list[Group]) -> float:
    """Mean unloaded latency of a request when requests are routed in proportion to the replicas' rates."""
    fits = [f for g in groups if (f := scorer.fit(g)) is not None]
    rate = sum(f.perf.requests_per_s for f in fits)
    return sum(f.perf.requests_per_s * f.perf.unloaded_latency_s for f in fits) / rate if rate else float("inf")


def _least_mean_latency(scorer: GroupScorer, seed: int, groups: list[Group]) -> list[Group]:
    """Minimise the mean latency: re-search with value = rate * (level - latency), level = the last plan's
    mean, until the mean stops falling (each round's plan has a mean no higher than the last)."""
    level = mean_latency(scorer, groups)
    for _ in range(DINKELBACH_ROUNDS):
        trial = ColocatedSearch(scorer, seed, latency_level=level * (1 + LATENCY_TIE)).run()
        trial_level = mean_latency(scorer, trial)
        if not trial or trial_level >= level * (1 - 1e-9):
            break
        groups, level = trial, trial_level
    return groups


def plan_colocated(
    model: ModelSpec,
    cluster: Cluster,
    workload: Workload,
    calibration: Calibration,
    objective: str = "throughput",
    seed: int = 0,
) -> Plan:
    """HexGen's colocated plan for a model on a cluster; a one-line SpecError when nothing fits."""
    table = CostTable(model, cluster, calibration, workload)
    fits = search_colocated(table, check_objective(objective), seed)
    if not fits:
        why = why_no_layout(table, cluster.devices)
        raise SpecError(f"plan: no replica of {model.name} fits on {cluster.name}: {why}")
    return plan_from_fits(table, fits, "hexgen", objective, seed)
