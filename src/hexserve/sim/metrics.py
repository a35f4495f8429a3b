"""What a run achieved: throughput, latency percentiles, SLO attainment, goodput and cost.

- Throughput: completed requests and output tokens over the makespan (first arrival to last finish).
- TTFT: arrival to first token (queueing included). TPOT: (finish - first token) / (output - 1), for
  requests of more than one output token. End-to-end: arrival to finish.
- SLO attainment (DistServe): the fraction of requests with TTFT <= k x TTFT_ref and TPOT <= k x
  TPOT_ref, for each SLO scale k; a rejected request never attains. The references are the plan's SLOs
  when it has them, else DEFAULT_SLO_TTFT / DEFAULT_SLO_TPOT (the planner's default TPOT target, and a
  TTFT a user of a chat service tolerates); the same references for every plan keep runs comparable.
- Saturated throughput: output tokens per second over the steady part of a run: from the first
  completion (before it the sequences in flight are still building up: a decode replica fed at the rate
  it serves fills over one request's lifetime) until the first moment some entry (colocated or prefill)
  replica has prefilled every request routed to it, i.e. while every entry replica still had prompts
  queued (offline runs: all requests at time 0); each request's tokens are interpolated between its first
  token and its finish. When less than half of the run is left after the first completion, the window
  starts at the first arrival. This is the plan's rate with every replica loaded, what the planners
  predict; the makespan rate also counts the ramp and the drain (the longest requests finishing alone,
  replicas given more than their share).
- Goodput: completed requests meeting the SLOs at scale 1, per second of makespan.
- $ per 1M output tokens: the plan's devices' price over the makespan, per output token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from hexserve.sim.result import SimResult

DEFAULT_SLO_TTFT = 2.0  # seconds
DEFAULT_SLO_TPOT = 0.2  # seconds per output token
SLO_SCALES = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class Dist:
    mean: float
    p50: float
    p90: float
    p99: float

    @classmethod
    def of(cls, values: np.ndarray) -> Dist:
        if values.size == 0:
            return cls(float("nan"), float("nan"), float("nan"), float("nan"))
        p = np.percentile(values, PERCENTILES)
        return cls(float(values.mean()), float(p[0]), float(p[1]), float(p[2]))


@dataclass(frozen=True)
class Summary:
    plan: str
    workload: str
    requests: int
    completed: int
    rejected: int
    makespan_s: float
    requests_per_s: float
    output_tokens_per_s: float
    saturated_tokens_per_s: float
    ttft_s: Dist
    tpot_s: Dist
    e2e_s: Dist
    slo_ttft_s: float
    slo_tpot_s: float
    attainment: dict[float, float]  # SLO scale -> fraction of requests
    goodput_rps: float
    usd_per_million_output_tokens: float
    price_per_hour: float
    preemptions: int
    predicted_rps: float
    sim_wall_s: float

    def to_json(self) -> dict:
        data = asdict(self)
        data["attainment"] = {str(k): v for k, v in self.attainment.items()}
        return data


def latencies(r: SimResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TTFT, TPOT (NaN for one-token outputs) and end-to-end seconds of the completed requests."""
    done = r.completed
    ttft = r.first_token[done] - r.arrival[done]
    steps = r.output[done] - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(steps > 0, (r.finish[done] - r.first_token[done]) / np.maximum(steps, 1), np.nan)
    return ttft, tpot, r.finish[done] - r.arrival[done]


def attainment(r: SimResult, slo_ttft: float, slo_tpot: float, scales=SLO_SCALES) -> dict[float, float]:
    ttft, tpot, _ = latencies(r)
    tpot = np.nan_to_num(tpot, nan=0.0)
    n = max(len(r.arrival), 1)
    return {k: float(np.sum((ttft <= k * slo_ttft) & (tpot <= k * slo_tpot)) / n) for k in scales}


def saturated_window(r: SimResult) -> tuple[float, float]:
    """(start, until) of the steady part of a run (module docstring); start >= until when there is none."""
    done = r.completed
    if not done.any():
        return 0.0, 0.0
    first, entry = r.first_token[done], r.replica[done]
    until = float(min(first[entry == e].max() for e in np.unique(entry)))
    arrival, settled = float(r.arrival.min()), float(r.finish[done].min())
    return (settled if until - settled >= 0.5 * (until - arrival) else arrival), until


def saturated_tokens_per_s(r: SimResult) -> float:
    start, until = saturated_window(r)
    if not until > start:
        return float("nan")
    done = r.completed
    first, finish, out = r.first_token[done], r.finish[done], r.output[done]
    return (tokens_by(until, first, finish, out) - tokens_by(start, first, finish, out)) / (until - start)


def tokens_by(t: float, first: np.ndarray, finish: np.ndarray, out: np.ndarray) -> float:
    """Output tokens emitted by time t, each request's spread evenly from its first token to its finish."""
    progress = np.clip((t - first) / np.maximum(finish - first, 1e-12), 0.0, 1.0)
    return float(np.where(first <= t, 1 + (out - 1) * progress, 0.0).sum())


def summarize(r: SimResult, slo_ttft: float | None = None, slo_tpot: float | None = None) -> Summary:
    slo_ttft = slo_ttft or DEFAULT_SLO_TTFT
    slo_tpot = slo_tpot or DEFAULT_SLO_TPOT
    ttft, tpot, e2e = latencies(r)
    done = r.completed
    span = r.makespan or float("nan")
    tokens = float(r.output[done].sum())
    met = np.sum((ttft <= slo_ttft) & (np.nan_to_num(tpot, nan=0.0) <= slo_tpot))
    dollars = r.price_per_hour * span / 3600
    return Summary(
        plan=r.plan, workload=r.workload, requests=len(r.arrival), completed=int(done.sum()),
        rejected=int(r.rejected.sum()), makespan_s=float(span), requests_per_s=float(done.sum() / span),
        output_tokens_per_s=tokens / span, saturated_tokens_per_s=saturated_tokens_per_s(r),
        ttft_s=Dist.of(ttft), tpot_s=Dist.of(tpot[~np.isnan(tpot)]),
        e2e_s=Dist.of(e2e), slo_ttft_s=slo_ttft, slo_tpot_s=slo_tpot,
        attainment=attainment(r, slo_ttft, slo_tpot), goodput_rps=float(met / span),
        usd_per_million_output_tokens=dollars / tokens * 1e6 if tokens else float("inf"),
        price_per_hour=r.price_per_hour, preemptions=int(r.preemptions.sum()),
        predicted_rps=r.predicted_rps, sim_wall_s=r.wall_s,
    )
