"""How many requests/s of KV cache one prefill replica can hand to one decode replica.

Each request's prompt KV (prompt_len x kv_bytes_per_token) must reach the decode replica re-sharded:
every decode rank receives exactly the (layer range x KV-head range) it owns, from the prefill ranks
that own those layers and heads (docs/planner-disaggregated.md). `kv_slices` lists those pieces; the
runtime sends exactly them, so the bytes of every (prefill rank, decode rank) pair here are the bytes
the runtime moves. Pairs transfer in parallel, each over its own
link (`Cluster.link`: inter-node links are per device pair, i.e. a NIC per GPU with GPUDirect RDMA, as
on DGX-class nodes); a device's own sends (and receives) share its link, so they are serialised. The
busiest device bounds the handoff:

    T = max over devices x of  sum over its pairs (x, y) of  bytes(x, y) / (bandwidth(x, y) * link eff.)

and the edge capacity is 1 / T requests/s (consecutive handoffs pipeline, so latency does not limit the
rate). This is never more optimistic than the single slowest pair and is exact when each device talks
over one link. Not modelled: several decode replicas fed by one prefill replica share that replica's
links (each P->D edge is bounded on its own, as in HexGen-2's flow network).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from hexserve.planner.phase import PhaseFit
from hexserve.planner.stagecost import CostTable
from hexserve.specs.cluster import Device

Layout = Sequence[tuple[int, int]]  # per pipeline stage, in order: (TP degree, number of layers)


@dataclass(frozen=True)
class KvSlice:
    """A piece of one request's KV cache that prefill rank `src` sends to decode rank `dst` (indices into
    each layout's ranks, stage by stage, in TP order): layers [first, end) of KV heads [first, end)."""

    src: int
    dst: int
    layers: tuple[int, int]
    heads: tuple[int, int]

    @property
    def layer_heads(self) -> int:
        return (self.layers[1] - self.layers[0]) * (self.heads[1] - self.heads[0])


def kv_heads(rank: int, tp: int, num_kv_heads: int) -> tuple[int, int]:
    """[first, end) of the KV heads a TP rank holds: a contiguous share, or one head replicated on
    tp / num_kv_heads consecutive ranks when TP exceeds the KV heads (the runtime's `Shard.kv_piece`)."""
    if tp <= num_kv_heads:
        per = num_kv_heads // tp
        return rank * per, (rank + 1) * per
    head = rank * num_kv_heads // tp
    return head, head + 1


def rank_owners(layout: Layout, num_kv_heads: int) -> list[tuple[int, int, int, int]]:
    """(stage, first layer, end layer, first head, end head) of every rank of a layout, in rank order."""
    owners, first = [], 0
    for stage, (tp, n) in enumerate(layout):
        owners += [(stage, first, first + n, *kv_heads(r, tp, num_kv_heads)) for r in range(tp)]
        first += n
    return owners


def kv_slices(prefill: Layout, decode: Layout, num_kv_heads: int) -> list[KvSlice]:
    """Every piece of a request's KV that crosses from the prefill replica to the decode replica, each
    exactly once. A decode head replicated on several ranks of a stage is received by the first of them
    (it copies it to the others over its stage's TP group); a prefill head replicated on several ranks is
    sent by all of them, each a contiguous part of the layers, so that their links share the work."""
    sources, slices, received = rank_owners(prefill, num_kv_heads), [], set()
    for dst, (stage, first, end, h0, h1) in enumerate(rank_owners(decode, num_kv_heads)):
        for head in range(h0, h1):
            if (stage, head) in received:
                continue
            received.add((stage, head))
            for holders in _holders_by_stage(sources, head, first, end):
                lo, hi = max(holders[0][1], first), min(holders[0][2], end)
                for k, (src, *_) in enumerate(holders):
                    part = (lo + (hi - lo) * k // len(holders), lo + (hi - lo) * (k + 1) // len(holders))
                    if part[1] > part[0]:
                        slices.append(KvSlice(src, dst, part, (head, head + 1)))
    return _merge_heads(slices)


def _holders_by_stage(sources, head: int, first: int, end: int) -> list[list[tuple[int, int, int]]]:
    """Per prefill stage overlapping layers [first, end): its ranks (index, first, end) that hold `head`."""
    stages: dict[int, list[tuple[int, int, int]]] = {}
    for i, (stage, f, n, h0, h1) in enumerate(sources):
        if h0 <= head < h1 and f < end and first < n:
            stages.setdefault(stage, []).append((i, f, n))
    return list(stages.values())


def _merge_heads(slices: list[KvSlice]) -> list[KvSlice]:
    """Consecutive heads of the same (src, dst, layers) as one slice: fewer, larger messages."""
    merged: list[KvSlice] = []
    for s in sorted(slices, key=lambda s: (s.src, s.dst, s.layers, s.heads)):
        last = merged[-1] if merged else None
        if last and (last.src, last.dst, last.layers) == (s.src, s.dst, s.layers) and last.heads[1] == s.heads[0]:
            merged[-1] = KvSlice(s.src, s.dst, s.layers, (last.heads[0], s.heads[1]))
        else:
            merged.append(s)
    return merged


def _layout(fit: PhaseFit) -> list[tuple[int, int]]:
    return [(len(stage), n) for stage, n in zip(fit.stages, fit.layers, strict=True)]


def pair_bytes(table: CostTable, prefill: PhaseFit, decode: PhaseFit) -> dict[tuple[Device, Device], float]:
    """Bytes of one request's KV each (prefill device, decode device) pair moves: the runtime's slices."""
    m, w = table.model, table.workload
    per_layer_head = w.prompt_len * 2 * m.head_dim * m.dtype_bytes  # K and V of one head in one layer
    sources = [d for stage in prefill.stages for d in stage]
    targets = [d for stage in decode.stages for d in stage]
    moved: dict[tuple[Device, Device], float] = defaultdict(float)
    for s in kv_slices(_layout(prefill), _layout(decode), m.num_kv_heads):
        moved[(sources[s.src], targets[s.dst])] += s.layer_heads * per_layer_head
    return dict(moved)


def handoff_seconds(table: CostTable, prefill: PhaseFit, decode: PhaseFit) -> float:
    """Seconds of link time per request on the busiest device of the handoff."""
    busy: dict[Device, float] = defaultdict(float)
    for (d, e), nbytes in pair_bytes(table, prefill, decode).items():
        link = table.cluster.link(d, e)
        eff = table.calibration.for_type(d.type.name).link
        seconds = nbytes / (link.bandwidth * eff)
        busy[d] += seconds
        busy[e] += seconds
    return max(busy.values(), default=0.0)


def kv_capacity(table: CostTable, prefill: PhaseFit, decode: PhaseFit) -> float:
    """Requests/s whose KV the link between the two replicas can carry."""
    seconds = handoff_seconds(table, prefill, decode)
    return 1.0 / seconds if seconds > 0 else float("inf")
