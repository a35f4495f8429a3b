"""Turn a scored disaggregated assignment into a Plan: prefill and decode replicas, shares and routes.

Replicas that carry no flow are left out (their devices stay unused). A prefill replica's share is its
flow over the total, likewise a decode replica's; each P->D edge that carries flow becomes a Route whose
share is the fraction of its prefill replica's requests, so a prefill replica's routes sum to 1.
"""

from __future__ import annotations

from hexserve.costmodel.latency import layer_ops, op_time, prefill_attention
from hexserve.planner.build import assemble_plan, stage_bottleneck, usd_per_million
from hexserve.planner.disagg_eval import Evaluation
from hexserve.planner.phase import PhaseFit
from hexserve.planner.plan import (
    Plan,
    Replica,
    ReplicaPrediction,
    Route,
    Stage,
    StagePrediction,
)
from hexserve.planner.stagecost import CostTable
from hexserve.planner.stagecost import Stage as Devices


def prefill_bottleneck(table: CostTable, stage: Devices) -> str:
    """What a stage's prefill waits on most: compute or memory bandwidth (per layer, TP comm aside)."""
    m, w = table.model, table.workload
    shape = table.shape(stage, 1, False, False)
    eff = table.calibration.for_type(shape.device_type.name)
    ops = layer_ops(m, shape.tp, w.prompt_len, prefill_attention(m, shape.tp, 1, w.prompt_len))
    peak = shape.device_type.tflops * 1e12
    flops = sum(o.flops / (peak * (eff.attention if o.is_attention else eff.matmul)) for o in ops)
    reads = sum(o.bytes / (shape.device_type.mem_bandwidth_gbps * 1e9 * eff.memory) for o in ops)
    total = sum(op_time(o, shape.device_type, eff) for o in ops)
    comm = table.cost(stage, False, False, None, 1).prefill.per_layer - total
    times = {"compute": flops, "memory bandwidth": reads, "link": comm}
    return max(times, key=times.get)


def _stages(table: CostTable, fit: PhaseFit) -> tuple[Stage, ...]:
    p, w = fit.perf, table.workload
    stages, first, last = [], 0, len(fit.stages) - 1
    for j, (devices, n) in enumerate(zip(fit.stages, fit.layers, strict=True)):
        memory = table.memory(devices, n, j == 0, j == last)
        following = fit.stages[j + 1] if j < last else None
        if p.phase == "prefill":
            times = (p.stage_time_s[j], 0.0, p.stage_time_s[j] / p.batch)
            bottleneck = prefill_bottleneck(table, devices)
        else:
            times = (0.0, p.stage_time_s[j], max(w.decode_steps, 1) * p.stage_time_s[j] / p.batch)
            bottleneck = stage_bottleneck(table, devices, n, p.batch, following)
        predicted = StagePrediction(
            prefill_s=times[0],
            decode_step_s=times[1],
            busy_s=times[2],
            memory_used_bytes=tuple(u.used(p.kv_tokens) for u in memory),
            memory_usable_bytes=tuple(u.usable for u in memory),
            bottleneck=bottleneck,
        )
        stages.append(Stage(tuple(d.index for d in devices), len(devices), (first, first + n), predicted))
        first += n
    return tuple(stages)


def replica_from_phase_fit(table: CostTable, fit: PhaseFit, share: float) -> Replica:
    p, w = fit.perf, table.workload
    stages = _stages(table, fit)
    price = sum(d.price_per_hour for s in fit.stages for d in s)
    tokens = p.requests_per_s * w.output_len
    latency = p.ttft_s if p.phase == "prefill" else w.decode_steps * p.tpot_s
    slowest = p.bottleneck_stage
    predicted = ReplicaPrediction(
        tokens_per_s=tokens,
        requests_per_s=p.requests_per_s,
        ttft_s=p.ttft_s,
        tpot_s=p.tpot_s,
        latency_s=latency,
        unloaded_latency_s=latency,
        micro_batch=p.batch,
        in_flight=p.in_flight,
        kv_tokens=p.kv_tokens,
        bottleneck=f"stage {slowest} ({stages[slowest].predicted.bottleneck})",
        limit=p.limit,
        price_per_hour=price,
        usd_per_million_tokens=usd_per_million(price, tokens),
    )
    return Replica(p.phase, stages, share, predicted)


def plan_from_evaluation(
    table: CostTable, e: Evaluation, planner: str = "hexgen2", seed: int | None = None, notes: tuple[str, ...] = ()
) -> Plan:
    flow, total = e.flow, e.flow.value
    prefill = [i for i, f in enumerate(flow.prefill_flow) if f > 0]
    decode = [k for k, f in enumerate(flow.decode_flow) if f > 0]
    replicas = [replica_from_phase_fit(table, e.fits[e.prefill[i]], flow.prefill_flow[i] / total) for i in prefill]
    replicas += [replica_from_phase_fit(table, e.fits[e.decode[k]], flow.decode_flow[k] / total) for k in decode]
    at_p = {i: n for n, i in enumerate(prefill)}
    at_d = {k: len(prefill) + n for n, k in enumerate(decode)}
    routing = tuple(
        Route(at_p[i], at_d[k], f / flow.prefill_flow[i], f, e.links[(i, k)])
        for (i, k), f in sorted(flow.edge_flow.items())
    )
    tokens = total * table.workload.output_len
    return assemble_plan(table, replicas, planner, "throughput", seed, tokens, total, routing=routing, notes=notes)
