"""When requests arrive: `--rate` as a fraction of the plan's peak, a fixed rate, all at once, or the trace's.

"peak" is the plan's predicted peak request rate (`plan.predicted.requests_per_s`: the colocated
planner's sum of replica rates, or the disaggregated planner's max-flow), so `0.75peak` loads a plan
at 75% of what its planner claims it sustains, the HexGen-2 paper's online setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hexserve.errors import SpecError
from hexserve.planner.plan import Plan
from hexserve.specs.workload import Workload


@dataclass(frozen=True)
class Rate:
    kind: str  # "peak" (value is a fraction), "fixed" (req/s), "offline", "trace"
    value: float = 0.0

    def requests_per_s(self, plan: Plan) -> float:
        if self.kind == "peak":
            if plan.predicted is None or not plan.predicted.requests_per_s > 0:
                raise SpecError("--rate: the plan has no predicted peak rate; give a rate in requests/s")
            return self.value * plan.predicted.requests_per_s
        return self.value if self.kind == "fixed" else math.inf


def parse_rate(text: str) -> Rate:
    t = text.strip().lower()
    if t in ("inf", "offline"):
        return Rate("offline")
    if t == "trace":
        return Rate("trace")
    kind, number = ("peak", t[: -len("peak")] or "1") if t.endswith("peak") else ("fixed", t)
    try:
        value = float(number)
    except ValueError:
        raise SpecError(f"--rate: {text!r} is not a rate; use e.g. 0.75peak, 2.5 (req/s), inf or trace") from None
    if not value > 0 or math.isinf(value) or math.isnan(value):
        raise SpecError(f"--rate: must be > 0 (got {text!r}); use inf for all requests at once")
    return Rate(kind, value)


def with_rate(workload: Workload, rate: Rate, plan: Plan, seed: int = 0) -> Workload:
    """The workload's requests arriving at `rate` (Poisson for peak and fixed rates)."""
    if rate.kind == "offline":
        return workload.offline()
    if rate.kind == "trace":
        return workload
    return workload.with_poisson_arrivals(rate.requests_per_s(plan), seed)
