"""Layers over the stages of a pipeline: the split that balances stage time under each stage's memory.

A stage's time is linear in its layer count (t_j(l) = fixed_j + per_layer_j * l, which is how the cost
model adds layers up), and its memory allows at most cap_j layers. Under that structure the greedy
below is exact, so no table-filling dynamic programme is needed (tests/test_planner_split.py checks it
against brute force):

- min-max (pipelined throughput): start every stage at one layer and hand out the remaining layers one
  at a time to the stage whose time after taking it is smallest. Each step keeps the running maximum
  as low as any split of that many layers can (the classic exchange argument for separable, increasing
  stage costs), so the final maximum is optimal.
- min-sum (latency of one pass): every layer costs its stage's per-layer time, so the cheapest stages
  take as many layers as their memory allows.
"""

from __future__ import annotations

import heapq


def minmax_split(fixed: list[float], per_layer: list[float], caps: list[int], total: int) -> list[int] | None:
    """Layers per stage (each >= 1 and <= its cap, summing to total) minimising max fixed + per_layer * l;
    None when the caps cannot hold `total` layers."""
    n = len(fixed)
    if n > total or any(c < 1 for c in caps) or sum(caps) < total:
        return None
    layers = _head_start(fixed, per_layer, caps, total)
    heap = [(fixed[j] + per_layer[j] * (layers[j] + 1), j) for j in range(n) if layers[j] < caps[j]]
    heapq.heapify(heap)
    for _ in range(total - sum(layers)):
        _, j = heapq.heappop(heap)
        layers[j] += 1
        if layers[j] < caps[j]:
            heapq.heappush(heap, (fixed[j] + per_layer[j] * (layers[j] + 1), j))
    return layers


def _head_start(fixed: list[float], per_layer: list[float], caps: list[int], total: int) -> list[int]:
    """Where the greedy would pass through: every stage holds each layer whose time is at most a level T
    that is reached before the greedy ends (T = the balance point without caps or rounding). The greedy
    hands out layers in increasing order of that time, so these come first whatever the ties; the same
    float expression decides `<= T` here and in the heap. Saves most of the heap steps."""
    n = len(fixed)
    if any(p <= 0 for p in per_layer):
        return [1] * n
    level = (total + sum(f / p for f, p in zip(fixed, per_layer, strict=True))) / sum(1 / p for p in per_layer)
    layers = []
    for f, p, cap in zip(fixed, per_layer, caps, strict=True):
        k = min(cap, max(1, int((level - f) / p)))
        while k > 1 and f + p * k > level:
            k -= 1
        while k < cap and f + p * (k + 1) <= level:
            k += 1
        layers.append(k)
    return layers if sum(layers) <= total else [1] * n


def minsum_split(per_layer: list[float], caps: list[int], total: int) -> list[int] | None:
    """Layers per stage (each >= 1 and <= its cap) minimising the sum of per_layer * l."""
    n = len(per_layer)
    if n > total or any(c < 1 for c in caps) or sum(caps) < total:
        return None
    layers = [1] * n
    spare = total - n
    for j in sorted(range(n), key=lambda j: (per_layer[j], j)):
        take = min(spare, caps[j] - 1)
        layers[j] += take
        spare -= take
    return layers


def equal_split(stages: int, total: int) -> list[int]:
    """The symmetric baselines' split: equal layers, the remainder one each to the first stages."""
    base, extra = divmod(total, stages)
    return [base + (j < extra) for j in range(stages)]
