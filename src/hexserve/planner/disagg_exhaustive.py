"""The reference the disaggregated search is measured against on small clusters: every partition of the
devices into groups and every prefill/decode role of each group, scored by the same max-flow.

Devices of one class (one type on one node) are interchangeable, links included, so a group is a
vector of per-class counts and an assignment a multiset of (vector, role) parts whose sum is at most
the class counts (what is left stays unused). Parts are enumerated in non-decreasing order of an index
so each multiset is met once; parts whose group has no feasible layout for the role are skipped (they
could only idle). Each group is laid out by the same phase layout search as the planner's, so the ratio
measures the partition, role and refinement heuristics. Exponential: for at most MAX_DEVICES devices.
"""

from __future__ import annotations

from hexserve.planner.disagg_eval import Evaluation, Evaluator, Group, canonical
from hexserve.planner.layout import device_classes
from hexserve.planner.partition import Vector, sub_vectors
from hexserve.planner.stagecost import CostTable

MAX_DEVICES = 8
ROLES = ("prefill", "decode")


def exhaustive_disaggregated(table: CostTable, evaluator: Evaluator | None = None) -> Evaluation | None:
    """The assignment with the highest flow over every partition and role (None when none has flow)."""
    devices = table.cluster.devices
    if len(devices) > MAX_DEVICES:
        raise ValueError(f"exhaustive search is for at most {MAX_DEVICES} devices, got {len(devices)}")
    evaluator = evaluator or Evaluator(table)
    classes = device_classes(devices)
    counts = tuple(len(c) for c in classes)

    def group(u: Vector, taken: Vector) -> Group:
        return tuple(d for c, t, k in zip(classes, taken, u, strict=True) for d in c[t : t + k])

    parts = [
        (u, role)
        for u in sub_vectors(counts)[1:]
        for role in ROLES
        if evaluator.rate(group(u, (0,) * len(u)), role) > 0
    ]
    best: list[Evaluation | None] = [None]

    def score(chosen: list[tuple[Vector, str]]) -> None:
        roles = [r for _, r in chosen]
        if "prefill" not in roles or "decode" not in roles:
            return
        taken, groups = (0,) * len(counts), []
        for u, _ in chosen:
            groups.append(group(u, taken))
            taken = tuple(a + b for a, b in zip(taken, u, strict=True))
        e = evaluator.evaluate(canonical(groups, roles))
        if best[0] is None or e.value > best[0].value:
            best[0] = e

    def extend(start: int, left: Vector, chosen: list[tuple[Vector, str]]) -> None:
        score(chosen)
        for n in range(start, len(parts)):
            u, role = parts[n]
            if all(a <= b for a, b in zip(u, left, strict=True)):
                rest = tuple(b - a for a, b in zip(u, left, strict=True))
                extend(n, rest, chosen + [(u, role)])

    extend(0, counts, [])
    return best[0] if best[0] is not None and best[0].value > 0 else None
