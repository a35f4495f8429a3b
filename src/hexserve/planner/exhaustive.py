"""The reference the colocated search is measured against on small clusters: every partition of the
devices into replicas, every way to cut each replica into TP groups (any mix of types and nodes), and
every order of those stages. Exponential: for clusters of at most 8 devices (tests, benchmarks).

It shares the exact per-order layer split and batch choice of `throughput.fit_throughput` with the
search, so the ratio of the two measures what the search's restrictions cost: which TP groups it forms
(one degree per class, one pool of mixed groups), which stage orders it tries, and the merge and
refinement heuristics.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from hexserve.planner.layout import device_classes, holds_weights
from hexserve.planner.partition import Vector, best_partition, sub_vectors
from hexserve.planner.stagecost import CostTable, Stage
from hexserve.planner.throughput import Fit, fit_throughput
from hexserve.specs.cluster import Cluster, Device, parse_cluster

MAX_DEVICES = 8


def _orders(classes: list[tuple[Device, ...]], remaining: Vector, valid: set[int]) -> Iterator[list[Vector]]:
    """Every ordered sequence of stages (count vectors of valid TP size) that uses `remaining` exactly."""
    if not any(remaining):
        yield []
        return
    for s in sub_vectors(remaining)[1:]:
        if sum(s) in valid:
            rest = tuple(a - b for a, b in zip(remaining, s, strict=True))
            for tail in _orders(classes, rest, valid):
                yield [s, *tail]


def _stages(classes: list[tuple[Device, ...]], base: Vector, order: list[Vector]) -> tuple[Stage, ...]:
    taken = list(base)
    stages = []
    for s in order:
        stages.append(tuple(d for i, c in enumerate(classes) for d in c[taken[i] : taken[i] + s[i]]))
        taken = [t + k for t, k in zip(taken, s, strict=True)]
    return tuple(stages)


def exhaustive_layout(table: CostTable, devices: list[Device]) -> Fit | None:
    """The best layout of one replica over these devices, by enumeration."""
    if not devices or not holds_weights(table, devices):
        return None
    classes = device_classes(devices)
    valid = set(table.model.valid_tp_degrees(len(devices)))
    counts = tuple(len(c) for c in classes)
    best = None
    for order in _orders(classes, counts, valid):
        fit = fit_throughput(table, _stages(classes, (0,) * len(classes), order))
        if fit is not None and (best is None or fit.perf.tokens_per_s > best.perf.tokens_per_s):
            best = fit
    return best


def exhaustive_plan(table: CostTable) -> tuple[float, list[Fit]]:
    """The highest total throughput of any colocated plan, and its replicas."""
    devices = table.cluster.devices
    if len(devices) > MAX_DEVICES:
        raise ValueError(f"exhaustive search is for at most {MAX_DEVICES} devices, got {len(devices)}")
    classes = device_classes(devices)
    fits: dict[Vector, Fit | None] = {}

    def value(u: Vector) -> float:
        if u not in fits:
            fits[u] = exhaustive_layout(table, [d for c, k in zip(classes, u, strict=True) for d in c[:k]])
        return fits[u].perf.tokens_per_s if fits[u] else 0.0

    total, parts = best_partition(tuple(len(c) for c in classes), value)
    return total, [fits[u] for u in parts if fits.get(u)]


RANDOM_TYPES = ("H100-SXM", "A100-80GB", "L40", "A6000", "A5000", "A4000", "RTX4090", "A10")
RANDOM_INTRA = ("nvlink3", "pcie4", "pcie3")
RANDOM_INTER = ("ib-hdr", "eth-100g", "eth-10g")


def random_cluster(rng: random.Random, max_devices: int = 8, max_nodes: int = 3) -> Cluster:
    """A small random cluster for the comparison: 1-4 devices per node of one or two types, random links."""
    left, nodes = rng.randint(3, max_devices), []
    while left > 0 and len(nodes) < max_nodes:
        size = left if len(nodes) == max_nodes - 1 else min(left, rng.randint(1, 4))
        left -= size
        types = rng.sample(RANDOM_TYPES, 2 if size > 1 and rng.random() < 0.5 else 1)
        first = rng.randint(1, size - 1) if len(types) == 2 else size
        gpus = [{"type": types[0], "count": first}]
        if len(types) == 2:
            gpus.append({"type": types[1], "count": size - first})
        nodes.append({"name": f"n{len(nodes)}", "gpus": gpus, "intra_link": {"kind": rng.choice(RANDOM_INTRA)}})
    data: dict = {"name": "random", "nodes": nodes}
    if len(nodes) > 1:
        data["inter_node"] = {"default": {"kind": rng.choice(RANDOM_INTER)}}
    return parse_cluster(data, "random")
