"""Candidate stages and stage orders for one replica's devices (scored by `layout.py`).

Stages (TP groups):
- Pure: each class (one type on one node, so every pair shares the node's link) is cut into TP groups of
  one degree t from `model.valid_tp_degrees`, the remainder into the widest valid degrees. Classes choose
  t independently, which makes layouts asymmetric (HexGen's case becomes TP (4, 2, 2)).
- Pooled: some classes send their remainder (or all their devices) to one shared pool, which is cut into
  consecutive TP groups of one degree, the pool in device order (locality) or sorted by memory and
  compute (likeness). A group that mixes types moves at its slowest member's pace and holds what its
  smallest member holds; a group over several nodes all-reduces over the slowest link (the cost model
  prices both: `costmodel.stage.slowest_type`, `Cluster.slowest_link`). This
  is what pays when a class's size is no valid degree (3 A6000s + 1 A10 as TP=4 for Llama-2-70B) or a
  lone device would be a poor stage (two A10s on two nodes as TP=2). Only choices with at least one mixed
  group are kept: the others repeat a pure choice. The smallest pools come first (remainders and lone
  devices are what a mixed group rescues); `layout.py` tries the first MAX_POOLED.

Orders: the ends of a pipeline hold the embedding (and the host's step) and the LM head, and each
boundary crosses the link between the two stages' first ranks. Stage lists with at most MAX_ORDERS
distinct orders are tried in every order. Longer ones keep stages contiguous by node (one cross-node
send per node boundary) and try every order of the node blocks (when there are at most MAX_BLOCK_ORDERS)
with every choice of first stage in the first block and last stage in the last block; inside a block
the other stages all send over the node's one link, so their order barely matters.
"""

from __future__ import annotations

import itertools
import math

from hexserve.planner.stagecost import Stage
from hexserve.specs.cluster import Device
from hexserve.specs.model import ModelSpec

Choice = tuple[list[Stage], ...]  # per class (or pool) the TP groups it is cut into
MAX_POOL_PICKS = 4096  # beyond this many ways to fill the pool (many classes), no pooled choices
MAX_ORDERS = 24  # stage lists with at most this many distinct orders are tried in every order
MAX_BLOCK_ORDERS = 6  # node-block orders tried in full up to this many (3 nodes), else forward/backward


def cut(model: ModelSpec, run: tuple[Device, ...], width: int) -> list[Stage]:
    """Consecutive TP groups of `width`, the remainder in the widest valid degrees."""
    stages, i = [], 0
    while i < len(run):
        w = width if len(run) - i >= width else max(t for t in model.valid_tp_degrees(len(run) - i))
        stages.append(run[i : i + w])
        i += w
    return stages


def class_options(model: ModelSpec, run: tuple[Device, ...]) -> list[list[Stage]]:
    """The ways one class may be cut into TP groups, widest first."""
    return [cut(model, run, t) for t in sorted(model.valid_tp_degrees(len(run)), reverse=True)]


def _pool_options(model: ModelSpec, run: tuple[Device, ...]) -> list[tuple[list[Stage], tuple[Device, ...]]]:
    """(groups kept in the class, devices sent to the pool): full groups of each degree, remainder pooled;
    or the whole class pooled."""
    options = [([], run)]
    for t in sorted(model.valid_tp_degrees(len(run)), reverse=True):
        full = len(run) // t * t
        options.append(([run[i : i + t] for i in range(0, full, t)], run[full:]))
    return options


def _is_mixed(stage: Stage) -> bool:
    return len({(d.node, d.type.name) for d in stage}) > 1


def pooled_choices(model: ModelSpec, classes: list[tuple[Device, ...]], limit: int) -> list[Choice]:
    """Up to `limit` choices with at least one TP group across classes (types or nodes), distinct by their
    stages, smallest pools first: remainders and lone devices are what a mixed group rescues."""
    options = [_pool_options(model, c) for c in classes]
    if math.prod(len(o) for o in options) > MAX_POOL_PICKS:
        return []
    found: dict[tuple, tuple[int, Choice]] = {}
    for picks in itertools.product(*options):
        pooled = [d for _, p in picks for d in p]
        if len({(d.node, d.type.name) for d in pooled}) < 2:
            continue
        for pool in _pool_orders(pooled):
            for t in model.valid_tp_degrees(len(pool)):
                mixed = cut(model, pool, t)
                if any(_is_mixed(s) for s in mixed):
                    choice = (*(kept for kept, _ in picks), mixed)
                    key = tuple(sorted(tuple(d.index for d in s) for part in choice for s in part))
                    found.setdefault(key, (len(pool), choice))
    ranked = sorted(found.values(), key=lambda item: item[0])
    return [choice for _, choice in ranked[:limit]]


def _pool_orders(pooled: list[Device]) -> list[tuple[Device, ...]]:
    """The pool is cut into consecutive groups: by locality (device order: nodes, then types) and by
    likeness (a group runs at its slowest, smallest member, so like devices should share a group)."""
    local = tuple(sorted(pooled, key=lambda d: d.index))
    alike = tuple(sorted(pooled, key=lambda d: (d.type.memory_gib, d.type.tflops, d.type.name, d.index)))
    return [local] if alike == local else [local, alike]


# ---------------------------------------------------------------------- orders


def _kind(stage: Stage) -> tuple:
    """Stages of one kind are interchangeable in an order."""
    return stage[0].node, tuple(sorted((d.node, d.type.name) for d in stage))


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


def _distinct(stages: list[Stage]) -> list[Stage]:
    seen: dict[tuple, Stage] = {}
    for s in stages:
        seen.setdefault(_kind(s), s)
    return list(seen.values())


def _ends(blocks: list[list[Stage]]) -> list[tuple[Stage, ...]]:
    """Every choice of the first stage of the first block and the last stage of the last block."""
    if len(blocks) == 1 and len(blocks[0]) == 1:
        return [tuple(blocks[0])]
    orders = []
    for first in _distinct(blocks[0]):
        head = [first] + [s for s in blocks[0] if s is not first]
        for last in _distinct(blocks[-1] if len(blocks) > 1 else head[1:]):
            body = [head] + blocks[1:]
            tail = [s for s in body[-1] if s is not last] + [last]
            orders.append(tuple(s for b in body[:-1] + [tail] for s in b))
    return orders


def block_orders(forward: tuple[Stage, ...]) -> list[tuple[Stage, ...]]:
    """Orders keeping each node's stages contiguous: node blocks in every order (or forward and
    backward when there are many nodes), each with every choice of end stages."""
    blocks: dict[str, list[Stage]] = {}
    for s in forward:
        blocks.setdefault(s[0].node, []).append(s)
    runs = list(blocks.values())
    few = math.factorial(len(runs)) <= MAX_BLOCK_ORDERS
    perms = list(itertools.permutations(runs)) if few else [runs, runs[::-1]]
    seen: dict[tuple, tuple[Stage, ...]] = {}
    for perm in perms:
        for order in _ends(list(perm)):
            seen.setdefault(tuple(_kind(s) for s in order), order)
    return list(seen.values())


def stage_orders(choice: Choice) -> list[tuple[Stage, ...]]:
    """Stage orders to try for one choice of TP groups."""
    forward = tuple(sorted((s for stages in choice for s in stages), key=lambda s: s[0].index))
    orders = _distinct_orders([_kind(s) for s in forward], MAX_ORDERS)
    if orders is not None:
        return [tuple(forward[i] for i in order) for order in orders]
    return block_orders(forward)
