"""Phase-specific throughput of one pipeline of stages: a prefill-only or a decode-only replica.

HexGen-2 gives each group one phase (ICLR 2025; docs/references.md), so each gets its own model:

- Prefill: micro-batches of b prompts; S micro-batches in flight keep every stage busy, so requests/s =
  b / max_j T_j(b), where T_j is stage j's prefill of b prompts plus its send to the next stage (the
  first stage also pays the engine's per-step host time). TTFT = sum_j T_j(b): one micro-batch's pass
  (unloaded, the same convention as the colocated model). b * prompt_len stays within the engine's
  token budget per step (costmodel.memory.MAX_BATCH_TOKENS; one prompt may exceed it, it is then
  chunked at the same cost), and b is the largest throughput whose TTFT meets the SLO. Memory: the KV
  of 2 * S * b prompts (the micro-batches being computed and those whose KV is still being sent).
- Decode: micro-batches of b sequences, N = S * b in flight. One token for every sequence takes
  TPOT = max(sum_j D_j(b), S * max_j D_j(b)) (a pass through every stage, or S turns of the busiest),
  so output tokens/s = N / TPOT and requests/s = tokens/s / (output_len - 1) (the prefill side already
  produced the first token). Memory: the KV of all N sequences at full length (prompt + output), so no
  admitted sequence is preempted. b is the largest throughput whose TPOT meets the SLO and whose KV fits.

Layers over stages: the min-max split of `split.py` on the phase's own stage lines (exact for a given
order and b), under each stage's memory cap at that b.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hexserve.costmodel.latency import pp_send_time, prefill_time
from hexserve.costmodel.memory import MAX_BATCH_TOKENS
from hexserve.planner.split import minmax_split
from hexserve.planner.stagecost import CostTable, Line, Stage
from hexserve.planner.throughput import BATCH_GRID

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class PhasePerf:
    """Predictions for one phase replica at micro-batch size `batch`."""

    phase: str
    batch: int
    in_flight: int  # prompts (prefill) or sequences (decode) held at once, per the memory reservation
    kv_tokens: int  # KV tokens each stage reserves for its layers
    requests_per_s: float
    ttft_s: float  # prefill: one micro-batch's pass; decode: 0
    tpot_s: float  # decode: time per output token; prefill: 0
    stage_time_s: tuple[float, ...]  # per stage: one prefill micro-batch, or one decode step
    limit: str  # what stops a larger micro-batch

    @property
    def bottleneck_stage(self) -> int:
        return max(range(len(self.stage_time_s)), key=lambda j: self.stage_time_s[j])


@dataclass(frozen=True)
class PhaseFit:
    """A scored layout of one phase replica: stages in order, layers per stage and the predictions."""

    stages: tuple[Stage, ...]
    layers: tuple[int, ...]
    perf: PhasePerf

    @property
    def requests_per_s(self) -> float:
        return self.perf.requests_per_s


class PrefillLines:
    """Prefill of b prompts through a stage as a line in its layers, cached (CostTable prices b = 1 only)."""

    def __init__(self, table: CostTable):
        self.table = table
        self._lines: dict[tuple, Line] = {}

    def line(self, stage: Stage, first: bool, last: bool, following: Stage | None, batch: int) -> Line:
        t = self.table
        send = t.boundary_link(stage, following)
        key = (tuple(sorted(d.type.name for d in stage)), t.tp_link(stage), first, last, send, batch)
        if key not in self._lines:
            m, w, cal = t.model, t.workload, t.calibration
            eff = cal.for_type(t.shape(stage, 0, first, last).device_type.name)
            fixed = (eff.step_s if first else 0.0) + (pp_send_time(m, batch * w.prompt_len, send, eff) if send else 0.0)
            pre = [prefill_time(m, t.shape(stage, n, first, last), cal, batch, w.prompt_len) for n in (0, 1)]
            self._lines[key] = Line(pre[0] + fixed, pre[1] - pre[0])
        return self._lines[key]


def _caps(table: CostTable, stages: tuple[Stage, ...], kv_tokens: int) -> list[int]:
    last = len(stages) - 1
    return [table.layer_cap(s, j == 0, j == last, kv_tokens) for j, s in enumerate(stages)]


def _split(lines: list[Line], caps: list[int], total: int, layers: tuple[int, ...] | None) -> list[int] | None:
    if layers is not None:
        return list(layers) if all(n <= c for n, c in zip(layers, caps, strict=True)) else None
    return minmax_split([x.fixed for x in lines], [x.per_layer for x in lines], caps, total)


def prefill_batches(table: CostTable) -> list[int]:
    """Micro-batch sizes within the engine's token budget per step (always at least one prompt)."""
    budget = max(MAX_BATCH_TOKENS, table.workload.prompt_len)
    return [b for b in BATCH_GRID if b * table.workload.prompt_len <= budget]


def fit_prefill(
    table: CostTable, lines: PrefillLines, stages: tuple[Stage, ...], layers: tuple[int, ...] | None = None
) -> PhaseFit | None:
    """The micro-batch and split with the most prefill requests/s meeting the TTFT SLO (None: none fits)."""
    w, last, best, limit = table.workload, len(stages) - 1, None, "token budget"
    for b in prefill_batches(table):
        kv_tokens = 2 * len(stages) * b * w.prompt_len
        stage_lines = [
            lines.line(s, j == 0, j == last, stages[j + 1] if j < last else None, b) for j, s in enumerate(stages)
        ]
        split = _split(stage_lines, _caps(table, stages, kv_tokens), table.model.num_layers, layers)
        if split is None:
            limit = "kv memory"
            break
        times = tuple(x.at(n) for x, n in zip(stage_lines, split, strict=True))
        ttft = sum(times)
        if w.slo_ttft is not None and ttft > w.slo_ttft:
            limit = "ttft slo"
            break
        perf = PhasePerf("prefill", b, len(stages) * b, kv_tokens, b / max(times), ttft, 0.0, times, "")
        if best is None or perf.requests_per_s > best.perf.requests_per_s:
            best = PhaseFit(stages, tuple(split), perf)
    return None if best is None else PhaseFit(best.stages, best.layers, replace(best.perf, limit=limit))


def fit_decode(table: CostTable, stages: tuple[Stage, ...], layers: tuple[int, ...] | None = None) -> PhaseFit | None:
    """The micro-batch and split with the most decode requests/s meeting the TPOT SLO (None: none fits)."""
    w, last, best, limit = table.workload, len(stages) - 1, None, "batch cap"
    steps = max(w.decode_steps, 1)
    for b in BATCH_GRID:
        in_flight = len(stages) * b
        kv_tokens = in_flight * w.seq_len
        costs = [
            table.cost(s, j == 0, j == last, table.boundary_link(s, stages[j + 1] if j < last else None), b)
            for j, s in enumerate(stages)
        ]
        stage_lines = [c.decode for c in costs]
        split = _split(stage_lines, _caps(table, stages, kv_tokens), table.model.num_layers, layers)
        if split is None:
            limit = "kv memory"
            break
        times = tuple(x.at(n) for x, n in zip(stage_lines, split, strict=True))
        tpot = max(sum(times), len(stages) * max(times))
        if w.slo_tpot is not None and tpot > w.slo_tpot:
            limit = "tpot slo"
            break
        perf = PhasePerf("decode", b, in_flight, kv_tokens, in_flight / tpot / steps, 0.0, tpot, times, "")
        if best is None or perf.requests_per_s > best.perf.requests_per_s:
            best = PhaseFit(stages, tuple(split), perf)
    return None if best is None else PhaseFit(best.stages, best.layers, replace(best.perf, limit=limit))

