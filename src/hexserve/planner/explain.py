"""A plan in words: per replica and stage, its devices, TP, layers, memory, speed, bottleneck and cost."""

from __future__ import annotations

from hexserve.planner.plan import Plan, Replica, Stage
from hexserve.specs.cluster import Cluster

GIB = 2**30
COLUMNS = ("stage", "devices", "type", "TP", "layers", "mem used/usable GiB", "free GiB", "prefill ms",
           "decode ms", "stage tok/s", "bottleneck")


def _device_names(cluster: Cluster, ids: tuple[int, ...]) -> str:
    devices = [cluster.devices[i] for i in ids]
    node = devices[0].node
    if all(d.node == node for d in devices):
        return f"{node}/{','.join(str(d.local_index) for d in devices)}"
    return " ".join(d.name for d in devices)


def _stage_row(plan: Plan, cluster: Cluster, j: int, s: Stage) -> list[str]:
    types = sorted({cluster.devices[i].type.name for i in s.devices})
    row = [str(j), _device_names(cluster, s.devices), "+".join(types), str(s.tp), f"{s.layers[0]}-{s.layers[1] - 1}"]
    p = s.predicted
    if p is None:
        return row + ["-"] * (len(COLUMNS) - len(row))
    worst = max(range(len(p.memory_used_bytes)), key=lambda k: p.memory_used_bytes[k] / p.memory_usable_bytes[k])
    used, usable = p.memory_used_bytes[worst], p.memory_usable_bytes[worst]
    stage_tokens = plan.workload.output_len / p.busy_s if p.busy_s else 0.0
    return row + [
        f"{used / GIB:.1f}/{usable / GIB:.1f}",
        f"{(usable - used) / GIB:.1f}",
        f"{p.prefill_s * 1e3:.1f}",
        f"{p.decode_step_s * 1e3:.1f}",
        f"{stage_tokens:,.0f}",
        p.bottleneck,
    ]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    lines = []
    for n, r in enumerate(rows):
        cells = [c.ljust(w) if k in (1, 2, 10) else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths, strict=True))]
        lines.append("  " + "  ".join(cells).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def _replica_lines(plan: Plan, cluster: Cluster, i: int, r: Replica) -> list[str]:
    p = r.predicted
    stages = f"{len(r.stages)} stage{'s' if len(r.stages) > 1 else ''}"
    head = f"replica {i} ({r.role}, {r.share:.1%} of requests, {len(r.devices)} devices, {stages})"
    lines = [head]
    if p is not None:
        lines.append(
            f"  {p.tokens_per_s:,.0f} output tokens/s, {p.requests_per_s:.2f} req/s; TTFT {p.ttft_s * 1e3:.0f} ms, "
            f"TPOT {p.tpot_s * 1e3:.0f} ms (alone: latency {p.unloaded_latency_s:.2f} s); micro-batch {p.micro_batch} "
            f"x {len(r.stages)} = {p.in_flight} in flight, limited by {p.limit}"
        )
        lines.append(
            f"  bottleneck {p.bottleneck}; ${p.price_per_hour:.2f}/h, "
            f"${p.usd_per_million_tokens:.2f} per 1M output tokens"
        )
    rows = [list(COLUMNS)] + [_stage_row(plan, cluster, j, s) for j, s in enumerate(r.stages)]
    return lines + _table(rows)


def _routing_lines(plan: Plan) -> list[str]:
    """Disaggregated plans: the P->D routes (max-flow edge flows) and the planner's log."""
    lines = []
    if plan.routing:
        lines += ["", "routing (prefill -> decode: share of its requests, req/s, KV link capacity)"]
        for r in plan.routing:
            lines.append(
                f"  replica {r.prefill} -> replica {r.decode}: {r.share:.1%}, {r.requests_per_s:.2f} req/s "
                f"(KV link carries up to {r.capacity_per_s:,.2f} req/s)"
            )
    if plan.notes:
        lines += ["", "planner log"] + [f"  {n}" for n in plan.notes]
    return lines


def explain_plan(plan: Plan, cluster: Cluster) -> str:
    w = plan.workload
    slo = ", ".join(
        f"{name} <= {value * 1e3:.0f} ms" for name, value in (("TTFT", w.slo_ttft), ("TPOT", w.slo_tpot)) if value
    ) or "no SLO"
    used = {d for r in plan.replicas for d in r.devices}
    unused = [d.name for d in cluster.devices if d.index not in used]
    lines = [
        f"plan by {plan.planner} ({plan.objective}) for {plan.model} on {plan.cluster}: {len(plan.replicas)} replicas; "
        f"workload prompt {w.prompt_len} / output {w.output_len} tokens, {slo}",
    ]
    if plan.predicted is not None:
        p = plan.predicted
        lines.append(
            f"predicted {p.tokens_per_s:,.0f} output tokens/s ({p.requests_per_s:.2f} req/s) on devices costing "
            f"${p.price_per_hour:.2f}/h: ${p.usd_per_million_tokens:.2f} per 1M output tokens"
        )
    lines.append(f"unused devices: {', '.join(unused) if unused else 'none'}")
    for i, r in enumerate(plan.replicas):
        lines += [""] + _replica_lines(plan, cluster, i, r)
    return "\n".join(lines + _routing_lines(plan))
