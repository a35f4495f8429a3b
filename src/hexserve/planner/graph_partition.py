"""Phase 1 of HexGen-2: cut the device graph into groups that each hold a replica.

The graph: devices are nodes (weighted by usable memory and compute), every pair is an edge weighted by
its link bandwidth (GB/s). Recursive bisection:

- Spectral: order the part's devices by the Fiedler vector of its weighted Laplacian (networkx
  `fiedler_vector`), so devices joined by fast links sit together, and take the sweep cut of that order
  with the least ratio cut (cut bandwidth over the product of the sides' memory) among the cuts that
  leave each side able to hold a replica (`need` bytes). Where every link of the part is the same (one
  node), the Laplacian says nothing: the order is by type and index, and the cut balances memory.
- Kernighan-Lin (networkx `kernighan_lin_bisection`, seeded) then swaps pairs across the cut while
  that lowers the bandwidth cut, i.e. keeps fast links inside groups; its result is kept only when both
  sides still hold a replica.
- A part is cut again while both halves can hold one; `need` = the weights times a headroom factor, so
  the headroom sets the granularity (the planner tries several and keeps the best after max-flow).

Secondary partition: the groups become super-nodes (edge weight = summed bandwidth between them);
`role_candidates` orders them by prefill affinity (prefill rate / decode rate of the group) and offers
every cut of that order into a prefill side and a decode side; the caller scores each by max-flow,
which weighs both the capacity ratio against the workload and the KV bandwidth across the cut, and
breaks ties by the summed bandwidth across the cut (`cut_bandwidth`).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from hexserve.planner.stagecost import CostTable
from hexserve.specs.cluster import Cluster, Device

Group = tuple[Device, ...]


def usable_bytes(table: CostTable, devices: Group | list[Device]) -> float:
    return sum(d.type.memory_bytes * table.calibration.for_type(d.type.name).memory_utilization for d in devices)


def device_graph(cluster: Cluster, devices: list[Device]) -> nx.Graph:
    """The devices and their links, edge weight in GB/s (numerically tame for the eigensolver)."""
    g = nx.Graph()
    for d in devices:
        g.add_node(d.index, memory=d.type.memory_bytes, tflops=d.type.tflops)
    for i, a in enumerate(devices):
        for b in devices[i + 1 :]:
            g.add_edge(a.index, b.index, weight=cluster.link(a, b).bandwidth_gbps)
    return g


def fiedler_order(cluster: Cluster, devices: list[Device], seed: int) -> list[Device]:
    """Devices ordered along the Fiedler vector (type and index where every link is alike)."""
    by_index = {d.index: d for d in devices}
    plain = sorted(devices, key=lambda d: (d.node, -d.type.tflops, d.type.name, d.index))
    g = device_graph(cluster, devices)
    weights = {w for _, _, w in g.edges(data="weight")}
    if len(devices) < 3 or len(weights) <= 1:
        return plain
    try:
        vector = nx.fiedler_vector(g, weight="weight", method="tracemin_lu", seed=seed)
    except nx.NetworkXError:
        return plain
    nodes = list(g.nodes)
    # Round away eigensolver noise so equal entries tie, then break ties like the plain order.
    rank = {d.index: k for k, d in enumerate(plain)}
    order = sorted(range(len(nodes)), key=lambda k: (round(float(vector[k]), 9), rank[nodes[k]]))
    if vector[order[0]] > vector[order[-1]]:
        order.reverse()
    return [by_index[nodes[k]] for k in order]


def _sweep_cut(table: CostTable, g: nx.Graph, order: list[Device], need: float) -> int | None:
    """The sweep cut of the spectral order with the least ratio cut, cut bandwidth / (memory left x
    memory right), among the cuts that leave each side `need` bytes: a cut along slow links (a node
    boundary) wins unless it leaves the sides very unequal."""
    memory = [usable_bytes(table, [d]) for d in order]
    total, left, cut, best = sum(memory), 0.0, 0.0, None
    for k in range(1, len(order)):
        moved = order[k - 1].index
        cut += sum(g[moved][order[j].index]["weight"] for j in range(k, len(order)))
        cut -= sum(g[moved][order[j].index]["weight"] for j in range(k - 1))
        left += memory[k - 1]
        if left >= need and total - left >= need:
            score = cut / (left * (total - left))
            if best is None or score < best[0] * (1 - 1e-9):
                best = (score, k)
    return None if best is None else best[1]


def bisect(table: CostTable, devices: list[Device], need: float, seed: int) -> tuple[Group, Group] | None:
    """A spectral cut refined by Kernighan-Lin, or None when the part cannot hold two replicas."""
    if usable_bytes(table, devices) < 2 * need:
        return None
    order = fiedler_order(table.cluster, devices, seed)
    g = device_graph(table.cluster, devices)
    k = _sweep_cut(table, g, order, need)
    if k is None:
        return None
    left, right = tuple(order[:k]), tuple(order[k:])
    a, b = nx.algorithms.community.kernighan_lin_bisection(
        g, partition=({d.index for d in left}, {d.index for d in right}), weight="weight", seed=seed
    )
    by_index = {d.index: d for d in devices}
    kl = tuple(by_index[i] for i in sorted(a)), tuple(by_index[i] for i in sorted(b))
    if all(usable_bytes(table, side) >= need for side in kl) and _cut(g, kl) < _cut(g, (left, right)) - 1e-9:
        return kl
    return left, right


def _cut(g: nx.Graph, sides: tuple[Group, Group]) -> float:
    right = {d.index for d in sides[1]}
    return sum(g[a.index][b]["weight"] for a in sides[0] for b in right)


def initial_partition(table: CostTable, headroom: float, seed: int) -> list[Group]:
    """Groups that each hold the weights times `headroom` (devices of parts too small to hold a replica
    stay out: the refinement may still add them to a group)."""
    need = table.model.weights_bytes * headroom
    todo, groups = [list(table.cluster.devices)], []
    while todo:
        part = todo.pop()
        halves = bisect(table, part, need, seed)
        if halves is None:
            if usable_bytes(table, part) >= table.model.weights_bytes:
                groups.append(tuple(sorted(part, key=lambda d: d.index)))
            continue
        todo += [list(halves[0]), list(halves[1])]
    return sorted(groups, key=lambda g: g[0].index)


def random_partition(table: CostTable, headroom: float, rng: np.random.Generator) -> list[Group]:
    """The ablation without phase 1: shuffled devices poured into groups until each holds the need."""
    need = table.model.weights_bytes * headroom
    devices = [table.cluster.devices[i] for i in rng.permutation(len(table.cluster.devices))]
    groups, current = [], []
    for d in devices:
        current.append(d)
        if usable_bytes(table, current) >= need:
            groups.append(tuple(sorted(current, key=lambda x: x.index)))
            current = []
    if current and groups:  # the remainder joins the last group rather than idling
        groups[-1] = tuple(sorted(groups[-1] + tuple(current), key=lambda x: x.index))
    return groups


# ----------------------------------------------------------------------------- secondary partition


def coarsen(cluster: Cluster, groups: list[Group]) -> nx.Graph:
    """Groups as super-nodes; an edge weighs the summed bandwidth (GB/s) of the device pairs between them."""
    g = nx.Graph()
    g.add_nodes_from(range(len(groups)))
    for i in range(len(groups)):
        for k in range(i + 1, len(groups)):
            weight = sum(cluster.link(a, b).bandwidth_gbps for a in groups[i] for b in groups[k])
            g.add_edge(i, k, weight=weight)
    return g


def cut_bandwidth(coarse: nx.Graph, roles: list[str]) -> float:
    return sum(w for i, k, w in coarse.edges(data="weight") if roles[i] != roles[k])


def role_candidates(prefill_rates: list[float], decode_rates: list[float]) -> list[list[str]]:
    """Every cut of the groups, ordered by prefill affinity, into a prefill side and a decode side."""
    n = len(prefill_rates)
    affinity = [p / d if d > 0 else (float("inf") if p > 0 else 0.0) for p, d in zip(prefill_rates, decode_rates,
                                                                                       strict=True)]
    order = sorted(range(n), key=lambda i: (-affinity[i], i))
    candidates = []
    for k in range(1, n):
        roles = ["decode"] * n
        for i in order[:k]:
            roles[i] = "prefill"
        candidates.append(roles)
    return candidates
