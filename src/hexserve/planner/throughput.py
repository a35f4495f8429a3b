"""The throughput model of one colocated replica: a pipeline that interleaves prefill and decode.

Steady state with continuous batching (docs/planner.md, "Throughput model"):

- The replica keeps S micro-batches (batch slots) of b sequences, one per stage (N = S * b sequences).
  Each request costs stage j, over its life, one prefill of its prompt and `output_len - 1` decode steps
  shared with b - 1 others: busy_j = prefill_j + (output_len - 1) * decode_j(b) / b. Were every step as
  long as every other, the busiest stage would never idle and requests/s = 1 / max_j busy_j.
- Steps are not equally long: a slot whose sequences finish prefills the next prompts (prefill first, no
  chunking: vLLM's scheduler, and the simulator's), a step several times a decode step. A slot's next
  step needs its previous one's tokens, so the S slots circle the pipeline in a fixed order and a long
  step holds up the slots behind it at every stage (a convoy): a round of S steps lasts about
  max(the busiest stage's work in the round, the longest step's pass through all stages), not the
  busiest stage's work alone. `pipeline_efficiency` is the ratio of the two on average (1 for one
  stage); requests/s = efficiency / max_j busy_j. The simulator measures the same losses as idle
  stage time.
- TPOT follows from Little's law: N sequences each advance one token per TPOT, so TPOT = N / (decode
  tokens/s) = S * b * max_j busy_j / (efficiency * (output_len - 1)), and never less than one decode pass
  through every stage. Long prompts raise TPOT: that is the prefill-decode interference of colocation.
- TTFT is one prompt's pass through every stage (no queueing: the planner quotes the unloaded value).
- Memory: every rank holds its weights, workspace and the KV of its layers for all N sequences at their
  full length (prompt + output), so no admitted sequence is ever preempted.

b is chosen from BATCH_GRID: the largest throughput whose TPOT and TTFT meet the SLOs and whose KV fits.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

from hexserve.costmodel.memory import MAX_BATCH_TOKENS
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


def prefill_step_sizes(prompt_len: int, output_len: int, batch: int) -> dict[int, float]:
    """Prompts per prefill step of a slot in steady state -> expected number of such steps per refill.
    A slot refills after a decode step in which some of its b sequences finished: Poisson with mean
    b / (output_len - 1), given at least one; the refill admits them in steps of at most the engine's token
    budget (one longer prompt goes alone)."""
    mean = batch / max(output_len - 1, 1)
    most = max(1, min(MAX_BATCH_TOKENS // prompt_len, batch))
    top = min(batch, int(mean + 6 * math.sqrt(mean) + 6))
    steps: dict[int, float] = {}
    for n in range(1, top + 1):
        chance = math.exp(n * math.log(mean) - mean - math.lgamma(n + 1)) / -math.expm1(-mean)
        full, rest = divmod(n, most)
        if full:
            steps[most] = steps.get(most, 0.0) + chance * full
        if rest:
            steps[rest] = steps.get(rest, 0.0) + chance
    return steps


def _expected_max(sizes: dict[int, float], draws: int) -> float:
    """Mean of the largest of `draws` independent step sizes distributed as `sizes` (weights)."""
    total, below, result = sum(sizes.values()), 0.0, 0.0
    for n in sorted(sizes):
        was = (below / total) ** draws
        below += sizes[n]
        result += n * ((below / total) ** draws - was)
    return result


@functools.cache
def _round_mix(prompt_len: int, output_len: int, batch: int, stages: int) -> tuple[float, float, tuple, tuple]:
    """Of one round of `stages` slot steps: the mean prompts per prefill step k, the chance q that a step
    is a prefill, and for m = 0..S prefill steps in the round its chance and the mean largest of them."""
    sizes = prefill_step_sizes(prompt_len, output_len, batch)
    k = sum(n * w for n, w in sizes.items()) / sum(sizes.values())
    prefill_steps, decode_steps = 1.0 / k, (output_len - 1) / batch
    q = prefill_steps / (prefill_steps + decode_steps)
    chances = tuple(math.comb(stages, m) * q**m * (1 - q) ** (stages - m) for m in range(stages + 1))
    largest = tuple(_expected_max(sizes, m) if m else 0.0 for m in range(stages + 1))
    return k, q, chances, largest


def pipeline_efficiency(
    prefill: tuple[float, ...], decode: tuple[float, ...], batch: int, prompt_len: int, output_len: int
) -> float:
    """Fraction of the time the busiest stage is busy when S slots of b sequences circle an S-stage pipeline
    with prefill-first steps (module docstring). Each slot's step in a round is, independently, a prefill of
    n prompts (stage j: n * prefill_j; n as in `prefill_step_sizes`, mean k) with probability q, else a
    decode step (decode_j). A round with m prefill steps lasts the longer of its work on the busiest stage,
    max_j m * k * prefill_j + (S - m) * decode_j, and its longest step's pass through all stages (the
    largest of m prefill steps, or a decode pass); the efficiency is the busiest stage's mean work per
    round over the mean round. Checked against the simulator (docs/simulator.md, "Planner agreement")."""
    stages = len(prefill)
    if stages == 1:
        return 1.0
    k, q, chances, largest = _round_mix(prompt_len, output_len, batch, stages)
    pk = [k * p for p in prefill]
    prefill_pass, decode_pass = sum(prefill), sum(decode)
    mean_round = 0.0
    for m in range(stages + 1):
        station = max(m * a + (stages - m) * d for a, d in zip(pk, decode, strict=True))
        convoy = max(largest[m] * prefill_pass, decode_pass if m < stages else 0.0)
        mean_round += chances[m] * (station if station > convoy else convoy)
    work = stages * max(q * a + (1 - q) * d for a, d in zip(pk, decode, strict=True))
    return work / mean_round


def perf_of(table: CostTable, costs: list[StageCost], layers: list[int], batch: int) -> ReplicaPerf:
    """Predictions of a layout whose layers are fixed (memory is checked by the caller)."""
    w = table.workload
    steps = w.decode_steps
    prefill = tuple(c.prefill.at(n) for c, n in zip(costs, layers, strict=True))
    decode = tuple(c.decode.at(n) for c, n in zip(costs, layers, strict=True))
    busy = tuple(p + steps * d / batch for p, d in zip(prefill, decode, strict=True))
    in_flight = len(costs) * batch
    cycle = max(busy) / pipeline_efficiency(prefill, decode, batch, w.prompt_len, w.output_len)
    rate = 1.0 / cycle
    tpot = max(in_flight * cycle / steps, sum(decode)) if steps else 0.0
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
