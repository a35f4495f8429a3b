"""HexGen-2's flow network: source -> prefill replicas -> decode replicas -> sink, solved by preflow-push.

Capacities (requests/s): source -> P_i the prefill replica's throughput, P_i -> D_k the KV-transfer rate
of the link between the two replicas, D_k -> sink the decode replica's throughput. The maximum flow is
the plan's request rate; the edge flows are the routing shares; the minimum cut (the nodes the source
still reaches in the residual network) names the bottleneck for the refinement.

Capacities are scaled to whole micro-requests/s before solving: networkx's flow algorithms are exact on
integers, while float capacities may round into flows that do not conserve.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
from networkx.algorithms.flow import preflow_push

SCALE = 1_000_000  # capacities in micro-requests/s
SOURCE, SINK = "s", "t"


def prefill_node(i: int) -> str:
    return f"P{i}"


def decode_node(k: int) -> str:
    return f"D{k}"


@dataclass(frozen=True)
class FlowResult:
    value: float  # requests/s through the network
    prefill_flow: tuple[float, ...]  # per prefill replica
    decode_flow: tuple[float, ...]  # per decode replica
    edge_flow: dict[tuple[int, int], float]  # (prefill i, decode k) -> requests/s, only edges that carry flow
    source_side: frozenset[str]  # the minimum cut's source side

    def saturated(self) -> tuple[list[int], list[tuple[int, int]], list[int]]:
        """Cut edges: prefill replicas, P->D links and decode replicas at capacity on the minimum cut."""
        s = self.source_side
        prefill = [i for i in range(len(self.prefill_flow)) if prefill_node(i) not in s]
        decode = [k for k in range(len(self.decode_flow)) if decode_node(k) in s]
        links = [
            (i, k)
            for i in range(len(self.prefill_flow))
            for k in range(len(self.decode_flow))
            if prefill_node(i) in s and decode_node(k) not in s
        ]
        return prefill, links, decode


def _units(rate: float) -> int:
    return int(min(rate, 1e12) * SCALE) if rate > 0 else 0


def network(prefill: list[float], decode: list[float], links: dict[tuple[int, int], float]) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node(SOURCE)
    g.add_node(SINK)
    for i, rate in enumerate(prefill):
        g.add_edge(SOURCE, prefill_node(i), capacity=_units(rate))
    for k, rate in enumerate(decode):
        g.add_edge(decode_node(k), SINK, capacity=_units(rate))
    for (i, k), rate in sorted(links.items()):
        if rate > 0:  # no edge where no link can carry the KV: nothing is ever routed over it
            g.add_edge(prefill_node(i), decode_node(k), capacity=_units(rate))
    return g


def _reachable(residual: nx.DiGraph) -> frozenset[str]:
    seen, todo = {SOURCE}, [SOURCE]
    while todo:
        u = todo.pop()
        for v, attr in residual[u].items():
            if v not in seen and attr["capacity"] - attr["flow"] > 0:
                seen.add(v)
                todo.append(v)
    return frozenset(seen)


def solve(prefill: list[float], decode: list[float], links: dict[tuple[int, int], float]) -> FlowResult:
    """The maximum flow of the network with these capacities (requests/s)."""
    g = network(prefill, decode, links)
    residual = preflow_push(g, SOURCE, SINK)
    flow = {(u, v): attr["flow"] for u, v, attr in residual.edges(data=True) if g.has_edge(u, v)}
    edge_flow = {
        (i, k): flow[(prefill_node(i), decode_node(k))] / SCALE
        for (i, k) in sorted(links)
        if flow.get((prefill_node(i), decode_node(k)), 0) > 0
    }
    return FlowResult(
        value=residual.graph["flow_value"] / SCALE,
        prefill_flow=tuple(flow.get((SOURCE, prefill_node(i)), 0) / SCALE for i in range(len(prefill))),
        decode_flow=tuple(flow.get((decode_node(k), SINK), 0) / SCALE for k in range(len(decode))),
        edge_flow=edge_flow,
        source_side=_reachable(residual),
    )
