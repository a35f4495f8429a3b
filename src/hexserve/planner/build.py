"""Turn scored layouts into a Plan: device ids, layer ranges, routing shares and the predictions."""

from __future__ import annotations

from hexserve.costmodel.latency import allreduce_time, decode_attention, layer_ops, pp_send_time
from hexserve.planner.plan import (
    Plan,
    PlanPrediction,
    Replica,
    ReplicaPrediction,
    Stage,
    StagePrediction,
    cluster_fingerprint,
    model_fingerprint,
)
from hexserve.planner.stagecost import CostTable
from hexserve.planner.stagecost import Stage as Devices
from hexserve.planner.throughput import Fit


def usd_per_million(price_per_hour: float, tokens_per_s: float) -> float:
    return price_per_hour / (tokens_per_s * 3600) * 1e6 if tokens_per_s > 0 else float("inf")


def stage_bottleneck(table: CostTable, stage: Devices, layers: int, batch: int, following: Devices | None) -> str:
    """What a decode step of this stage waits on most: compute, memory bandwidth or links."""
    m, cal = table.model, table.calibration
    shape = table.shape(stage, layers, False, False)
    eff = cal.for_type(shape.device_type.name)
    ops = layer_ops(m, shape.tp, batch, decode_attention(m, shape.tp, batch, table.workload.mean_context))
    peak = shape.device_type.tflops * 1e12
    flops = sum(o.flops / (peak * (eff.attention if o.is_attention else eff.matmul)) for o in ops)
    reads = sum(o.bytes / (shape.device_type.mem_bandwidth_gbps * 1e9 * eff.memory) for o in ops)
    comm = 2 * allreduce_time(batch * m.hidden_size * m.dtype_bytes, shape.tp, shape.tp_link, eff)
    link = table.boundary_link(stage, following)
    send = pp_send_time(m, batch, link, eff) / max(layers, 1) if link else 0.0
    times = {"compute": flops, "memory bandwidth": reads, "link": comm + send}
    return max(times, key=times.get)


def replica_from_fit(table: CostTable, fit: Fit, role: str = "colocated") -> Replica:
    p = fit.perf
    kv_tokens = p.in_flight * table.workload.seq_len
    stages, first_layer, last = [], 0, len(fit.stages) - 1
    for j, (devices, n) in enumerate(zip(fit.stages, fit.layers, strict=True)):
        memory = table.memory(devices, n, j == 0, j == last)
        following = fit.stages[j + 1] if j < last else None
        predicted = StagePrediction(
            prefill_s=p.stage_prefill_s[j],
            decode_step_s=p.stage_decode_s[j],
            busy_s=p.stage_busy_s[j],
            memory_used_bytes=tuple(u.used(kv_tokens) for u in memory),
            memory_usable_bytes=tuple(u.usable for u in memory),
            bottleneck=stage_bottleneck(table, devices, n, p.batch, following),
        )
        stages.append(Stage(tuple(d.index for d in devices), len(devices), (first_layer, first_layer + n), predicted))
        first_layer += n
    price = sum(d.price_per_hour for s in fit.stages for d in s)
    slowest = p.bottleneck_stage
    predicted = ReplicaPrediction(
        tokens_per_s=p.tokens_per_s,
        requests_per_s=p.requests_per_s,
        ttft_s=p.ttft_s,
        tpot_s=p.tpot_s,
        latency_s=p.latency_s,
        unloaded_latency_s=p.unloaded_latency_s,
        micro_batch=p.batch,
        in_flight=p.in_flight,
        kv_tokens=kv_tokens,
        bottleneck=f"stage {slowest} ({stages[slowest].predicted.bottleneck})",
        limit=p.limit,
        price_per_hour=price,
        usd_per_million_tokens=usd_per_million(price, p.tokens_per_s),
    )
    return Replica(role, tuple(stages), 0.0, predicted)


def plan_from_fits(
    table: CostTable, fits: list[Fit], planner: str = "hexgen", objective: str = "throughput", seed: int | None = None
) -> Plan:
    """A colocated plan; requests are routed in proportion to each replica's request rate."""
    replicas = [replica_from_fit(table, f) for f in fits]
    total_rate = sum(f.perf.requests_per_s for f in fits)
    replicas = [
        Replica(r.role, r.stages, f.perf.requests_per_s / total_rate if total_rate else 0.0, r.predicted)
        for r, f in zip(replicas, fits, strict=True)
    ]
    tokens = sum(f.perf.tokens_per_s for f in fits)
    return assemble_plan(table, replicas, planner, objective, seed, tokens, total_rate)


def assemble_plan(
    table: CostTable,
    replicas: list[Replica],
    planner: str,
    objective: str,
    seed: int | None,
    tokens_per_s: float,
    requests_per_s: float,
    **extra: object,
) -> Plan:
    """The plan file of these replicas: model and cluster fingerprints, workload, predictions, and any
    extra fields (the disaggregated planner's routing and notes)."""
    price = sum(r.predicted.price_per_hour for r in replicas)
    return Plan(
        model=table.model.name,
        model_fingerprint=model_fingerprint(table.model),
        cluster=table.cluster.name,
        cluster_fingerprint=cluster_fingerprint(table.cluster),
        workload=table.workload,
        replicas=tuple(replicas),
        planner=planner,
        objective=objective,
        seed=seed,
        predicted=PlanPrediction(tokens_per_s, requests_per_s, price, usd_per_million(price, tokens_per_s)),
        **extra,
    )
