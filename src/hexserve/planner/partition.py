"""Split a multiset of devices into replicas: dynamic programming over count vectors.

Devices of one class (one type on one node) are interchangeable, so a group of devices is a vector of
per-class counts and the best split of a vector v is
    best(v) = max over non-zero u <= v of  value(u) + best(v - u),   best(0) = 0,
where value(u) is the score of u as one replica (0 when it has no feasible layout: those devices stay
unused). Visiting vectors in lexicographic order meets every sub-vector first. Work grows as the
product of (count + 1)(count + 2) / 2 over the classes, so callers keep vectors small (one node, or a
pair of nodes).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

Vector = tuple[int, ...]


def state_count(counts: Vector) -> int:
    return math.prod(c + 1 for c in counts)


def sub_vectors(counts: Vector) -> list[Vector]:
    """Every vector <= counts, in lexicographic order."""
    return list(itertools.product(*(range(c + 1) for c in counts)))


def best_partition(counts: Vector, value: Callable[[Vector], float]) -> tuple[float, list[Vector]]:
    """The highest total value of disjoint parts of `counts`, and the parts (those worth > 0)."""
    vectors = sub_vectors(counts)
    worth = {u: max(value(u), 0.0) if any(u) else 0.0 for u in vectors}
    best: dict[Vector, tuple[float, Vector]] = {vectors[0]: (0.0, vectors[0])}
    for v in vectors[1:]:
        choice = (0.0, v)  # nothing worth anything: every device unused
        for u in sub_vectors(v)[1:]:
            rest = tuple(a - b for a, b in zip(v, u, strict=True))
            total = worth[u] + best[rest][0]
            if total > choice[0] + 1e-12:
                choice = (total, u)
        best[v] = choice
    parts, v = [], counts
    while any(v):
        total, u = best[v]
        if total <= 0:
            break
        if worth[u] > 0:
            parts.append(u)
        v = tuple(a - b for a, b in zip(v, u, strict=True))
    return best[counts][0], parts
