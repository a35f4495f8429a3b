"""How many requests/s of KV cache one prefill replica can hand to one decode replica.

Each request's prompt KV (prompt_len x kv_bytes_per_token) must reach the decode replica re-sharded:
every decode rank receives exactly the (layer range x KV-head range) it owns, from the prefill ranks
that own those layers and heads (docs/planner-disaggregated.md). The bytes of every (prefill
rank, decode rank) pair follow from the two layouts. Pairs transfer in parallel, each over its own
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

from hexserve.planner.phase import PhaseFit
from hexserve.planner.stagecost import CostTable
from hexserve.specs.cluster import Device


def _heads(rank: int, tp: int, num_kv_heads: int) -> list[int]:
    """KV heads a rank holds: a contiguous share, or one replicated head when TP exceeds the KV heads."""
    if tp <= num_kv_heads:
        per = num_kv_heads // tp
        return list(range(rank * per, (rank + 1) * per))
    return [rank * num_kv_heads // tp]


def _owners(fit: PhaseFit, num_kv_heads: int) -> list[tuple[Device, int, int, list[int]]]:
    """(device, first layer, end layer, heads) of every rank of a layout."""
    owners, first = [], 0
    for stage, n in zip(fit.stages, fit.layers, strict=True):
        owners += [(d, first, first + n, _heads(r, len(stage), num_kv_heads)) for r, d in enumerate(stage)]
        first += n
    return owners


def pair_bytes(table: CostTable, prefill: PhaseFit, decode: PhaseFit) -> dict[tuple[Device, Device], float]:
    """Bytes of one request's KV each (prefill rank, decode rank) pair moves."""
    m, w = table.model, table.workload
    per_layer_head = w.prompt_len * 2 * m.head_dim * m.dtype_bytes  # K and V of one head in one layer
    sources = _owners(prefill, m.num_kv_heads)
    moved: dict[tuple[Device, Device], float] = defaultdict(float)
    for e, e_first, e_end, e_heads in _owners(decode, m.num_kv_heads):
        for h in e_heads:
            holders = [(d, f, n) for d, f, n, hs in sources if h in hs and f < e_end and n > e_first]
            for d, f, n in holders:
                layers = min(n, e_end) - max(f, e_first)
                # a head replicated on several prefill ranks of one stage: each sends its part
                copies = sum(1 for d2, f2, n2 in holders if (f2, n2) == (f, n))
                moved[(d, e)] += layers * per_layer_head / copies
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
