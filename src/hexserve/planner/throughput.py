"""The throughput model of one colocated replica: a pipeline that interleaves prefill and decode.

Steady state with continuous batching (docs/planner.md, "Throughput model"):

- The replica keeps S micro-batches of b sequences in flight, one per stage, so no stage idles
  (N = S * b sequences). Each request costs stage j, over its life, one prefill of its prompt and
  `output_len - 1` decode steps shared with b - 1 others: busy_j = prefill_j + (output_len - 1) *
  decode_j(b) / b. The busiest stage sets the rate: requests/s = 1 / max_j busy_j, and output tokens/s
  = requests/s * output_len. Prefill interleaving is therefore paid in full on every stage.
- TPOT follows from Little's law: N sequences each advance one token per TPOT, so TPOT = N / (decode
  tokens/s) = S * b * max_j busy_j / (output_len - 1), and never less than one decode pass through every
  stage. Long prompts raise TPOT: that is the prefill-decode interference of colocation.
- TTFT is one prompt's pass through every stage (no queueing: the planner quotes the unloaded value).
- Memory: every rank holds its weights, workspace and the KV of its layers for all N sequences at their
  full length (prompt + output), so no admitted sequence is ever preempted.

b is chosen from BATCH_GRID: the largest throughput whose TPOT and TTFT meet the SLOs and whose KV fits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hexserve.planner.split import minmax_split, minsum_split
from hexserve.planner.stagecost import CostTable, Stage, StageCost

BATCH_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


@dataclass(frozen=True)
class ReplicaPerf:
    """Predictions for one replica at micro-batch size `batch`."""

    batch: int
    in_flight: int  # sequences decoding at once (stages x batch)
    tokens_per_s: float  # output tokens per second at saturation
    requests_per_s: float
    ttft_s: float
    tpot_s: float
    latency_s: float  # TTFT + (output_len - 1) * TPOT at saturation
    unloaded_latency_s: float  # one request alone: its prefill pass, then one decode pass per token
    stage_busy_s: tuple[float, ...]  # per request, per stage
    stage_prefill_s: tuple[float, ...]
    stage_decode_s: tuple[float, ...]  # one decode step of a micro-batch
    limit: str  # what stops a larger micro-batch

    @property
    def bottleneck_stage(self) -> int:
        return max(range(len(self.stage_busy_s)), key=lambda j: self.stage_busy_s[j])


@dataclass(frozen=True)
class Fit:
    """A scored layout of one replica: stages in order, layers per stage and the predictions."""

    stages: tuple[Stage, ...]
    layers: tuple[int, ...]
    perf: ReplicaPerf


def stage_costs(table: CostTable, stages: tuple[Stage, ...], batch: int) -> list[StageCost]:
    last = len(stages) - 1
    return [
        table.cost(s, j == 0, j == last, table.boundary_link(s, stages[j + 1] if j < last else None), batch)
        for j, s in enumerate(stages)
    ]


def layer_caps(table: CostTable, stages: tuple[Stage, ...], batch: int) -> list[int]:
    kv_tokens = len(stages) * batch * table.workload.seq_len
    last = len(stages) - 1
    return [table.layer_cap(s, j == 0, j == last, kv_tokens) for j, s in enumerate(stages)]


def perf_of(table: CostTable, costs: list[StageCost], layers: list[int], batch: int) -> ReplicaPerf:
    """Predictions of a layout whose layers are fixed (memory is checked by the caller)."""
    w = table.workload
    steps = w.decode_steps
    prefill = tuple(c.prefill.at(n) for c, n in zip(costs, layers, strict=True))
    decode = tuple(c.decode.at(n) for c, n in zip(costs, layers, strict=True))
    busy = tuple(p + steps * d / batch for p, d in zip(prefill, decode, strict=True))
    in_flight = len(costs) * batch
    rate = 1.0 / max(busy)
    tpot = max(in_flight * max(busy) / steps, sum(decode)) if steps else 0.0
    ttft = sum(prefill)
    latency = ttft + steps * tpot
    return ReplicaPerf(
        batch, in_flight, rate * w.output_len, rate, ttft, tpot, latency, latency, busy, prefill, decode, ""
    )


def slo_miss(table: CostTable, perf: ReplicaPerf) -> str:
    """Which SLO a prediction misses ('' when it meets both)."""
    w = table.workload
    if w.slo_tpot is not None and perf.tpot_s > w.slo_tpot:
        return "tpot"
    if w.slo_ttft is not None and perf.ttft_s > w.slo_ttft:
        return "ttft"
    return ""


def _busy_lines(table: CostTable, costs: list[StageCost], batch: int) -> tuple[list[float], list[float]]:
    steps = table.workload.decode_steps
    fixed = [c.prefill.fixed + steps * c.decode.fixed / batch for c in costs]
    per_layer = [c.prefill.per_layer + steps * c.decode.per_layer / batch for c in costs]
    return fixed, per_layer


def fit_throughput(table: CostTable, stages: tuple[Stage, ...], layers: list[int] | None = None) -> Fit | None:
    """The micro-batch and layer split with the most throughput meeting the SLOs (layers fixed when given).
    Memoised by the stages' cost key: the search meets the same shapes on many device sets."""
    key = (table.order_key(stages), None if layers is None else tuple(layers))
    if key not in table.fits:
        found = _fit_throughput(table, stages, layers)
        table.fits[key] = None if found is None else (found.layers, found.perf)
    known = table.fits[key]
    return None if known is None else Fit(stages, *known)


def _fit_throughput(table: CostTable, stages: tuple[Stage, ...], layers: list[int] | None) -> Fit | None:
    """Larger batches need more KV (smaller layer caps) and raise TPOT, so the scan stops at the first
    batch that misses either; a TTFT miss depends on the split only and does not stop it."""
    best: Fit | None = None
    limit = "batch cap"
    num_layers = table.model.num_layers
    for batch in BATCH_GRID:
        caps = layer_caps(table, stages, batch)
        costs = stage_costs(table, stages, batch)
        split = layers if layers is not None else minmax_split(*_busy_lines(table, costs, batch), caps, num_layers)
        if split is None or any(n > c for n, c in zip(split, caps, strict=True)):
            limit = "kv memory"
            break
        perf = perf_of(table, costs, split, batch)
        miss = slo_miss(table, perf)
        if miss == "tpot":
            limit = "tpot slo"
            break
        if not miss and (best is None or perf.tokens_per_s > best.perf.tokens_per_s):
            best = Fit(stages, tuple(split), perf)
    if best is None:
        return None
    alone = perf_of(table, stage_costs(table, stages, 1), list(best.layers), 1)
    unloaded = alone.ttft_s + table.workload.decode_steps * sum(alone.stage_decode_s)
    return Fit(stages, best.layers, replace(best.perf, limit=limit, unloaded_latency_s=unloaded))


def fit_latency(table: CostTable, stages: tuple[Stage, ...]) -> Fit | None:
    """The split with the lowest unloaded latency (TTFT + decode at micro-batch 1), then the batch with the
    most throughput that split allows; the balanced split when the fastest one meets no SLO."""
    caps = layer_caps(table, stages, 1)
    costs = stage_costs(table, stages, 1)
    steps = table.workload.decode_steps
    per_layer = [c.prefill.per_layer + steps * c.decode.per_layer for c in costs]
    split = minsum_split(per_layer, caps, table.model.num_layers)
    if split is None:
        return None
    return fit_throughput(table, stages, split) or fit_throughput(table, stages)
