"""A picture of a plan on its cluster (`hexserve plan ... --draw plan.png`), networkx + matplotlib.

Devices are drawn around their replica's centre: prefill replicas in the left column (squares), decode
replicas in the right column (circles), colocated replicas in the middle (diamonds), unused devices
grey along the bottom. Colour = replica. Lines = links, width growing with log bandwidth: every link
inside a replica, and the device links between a prefill and a decode replica that the routing uses.
An arrow from each prefill replica to each decode replica it feeds carries the flow (req/s) and the
KV link's capacity.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

from hexserve.planner.plan import Plan  # noqa: E402
from hexserve.specs.cluster import Cluster  # noqa: E402

MARKERS = {"prefill": "s", "decode": "o", "colocated": "D"}
COLUMN = {"prefill": 0.0, "colocated": 1.0, "decode": 2.0}


def _centres(plan: Plan) -> dict[int, tuple[float, float]]:
    centres, rows = {}, {}
    for i, r in enumerate(plan.replicas):
        row = rows.get(r.role, 0)
        rows[r.role] = row + 1
        centres[i] = (COLUMN[r.role] * 3.0, -row * 2.4)
    return centres


def _positions(plan: Plan, cluster: Cluster) -> dict[int, tuple[float, float]]:
    pos: dict[int, tuple[float, float]] = {}
    for i, (cx, cy) in _centres(plan).items():
        devices = plan.replicas[i].devices
        radius = 0.35 + 0.06 * len(devices)
        for k, d in enumerate(devices):
            angle = 2 * math.pi * k / len(devices)
            pos[d] = (cx + radius * math.cos(angle), cy + radius * math.sin(angle)) if len(devices) > 1 else (cx, cy)
    used = set(pos)
    bottom = min((y for _, y in pos.values()), default=0.0) - 2.0
    for k, d in enumerate(x.index for x in cluster.devices if x.index not in used):
        pos[d] = (k * 0.5, bottom)
    return pos


def _graph(plan: Plan, cluster: Cluster) -> nx.Graph:
    g = cluster.graph()
    keep = nx.Graph()
    keep.add_nodes_from(g.nodes(data=True))
    pairs = [(a, b) for r in plan.replicas for a in r.devices for b in r.devices if a < b]
    for route in plan.routing:
        pairs += [(a, b) for a in plan.replicas[route.prefill].devices for b in plan.replicas[route.decode].devices]
    for a, b in pairs:
        keep.add_edge(a, b, **g.edges[a, b])
    return keep


def draw_plan(plan: Plan, cluster: Cluster, path: str) -> None:
    """Write the picture to `path` (PNG, or any format matplotlib knows by the suffix)."""
    pos, g = _positions(plan, cluster), _graph(plan, cluster)
    height = max(5.0, 1.6 * max(1, sum(1 for r in plan.replicas if r.role == "prefill"),
                                sum(1 for r in plan.replicas if r.role == "decode")))
    fig, ax = plt.subplots(figsize=(12, height))
    widths = [0.4 + 0.5 * math.log2(max(g.edges[e]["link"].bandwidth_gbps, 1.0)) for e in g.edges]
    nx.draw_networkx_edges(g, pos, ax=ax, width=widths, alpha=0.25, edge_color="grey")
    colours = plt.get_cmap("tab20")
    for i, r in enumerate(plan.replicas):
        nx.draw_networkx_nodes(g, pos, nodelist=list(r.devices), node_shape=MARKERS[r.role], ax=ax,
                               node_color=[colours(i % 20)], node_size=260, edgecolors="black")
    used = {d for r in plan.replicas for d in r.devices}
    unused = [d.index for d in cluster.devices if d.index not in used]
    nx.draw_networkx_nodes(g, pos, nodelist=unused, node_color="lightgrey", node_shape="x", ax=ax, node_size=120)
    nx.draw_networkx_labels(g, pos, labels={d.index: str(d.index) for d in cluster.devices}, font_size=7, ax=ax)
    _annotate(plan, cluster, ax)
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _annotate(plan: Plan, cluster: Cluster, ax: plt.Axes) -> None:
    centres = _centres(plan)
    for i, r in enumerate(plan.replicas):
        types = sorted({cluster.devices[d].type.name for d in r.devices})
        tps = "/".join(str(s.tp) for s in r.stages)
        rate = r.predicted.requests_per_s if r.predicted else 0.0
        x, y = centres[i]
        ax.annotate(f"{r.role} {i}: {'+'.join(types)}\nTP {tps}, {rate:.2f} req/s", (x, y + 0.55 + 0.06 *
                    len(r.devices)), ha="center", fontsize=7)
    for route in plan.routing:
        (x0, y0), (x1, y1) = centres[route.prefill], centres[route.decode]
        ax.annotate("", (x1 - 0.6, y1), (x0 + 0.6, y0),
                    arrowprops={"arrowstyle": "->", "lw": 0.8 + 2.5 * route.share, "color": "tab:red", "alpha": 0.7})
        at = 0.3  # labels near the prefill end: the arrows converge on shared decode replicas
        label = f"{route.requests_per_s:.2f} req/s\n(cap {route.capacity_per_s:.1f})"
        ax.text(x0 + at * (x1 - x0), y0 + at * (y1 - y0) + 0.15, label,
                fontsize=6, color="tab:red", ha="center")
    p = plan.predicted
    title = f"{plan.planner}: {plan.model} on {plan.cluster}, prompt {plan.workload.prompt_len} / output " \
            f"{plan.workload.output_len}"
    if p is not None:
        title += f": {p.requests_per_s:.2f} req/s, {p.tokens_per_s:,.0f} output tok/s"
    ax.set_title(title + "\nsquares prefill, circles decode, diamonds colocated; line width ~ log bandwidth",
                 fontsize=9)
