"""What a simulation returns: every request's timestamps, and what each replica and link did."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ReplicaReport:
    index: int
    role: str
    stages: int
    kv_blocks: int  # pool capacity
    peak_blocks: int  # most held at once (never above kv_blocks)
    prefill_steps: int
    decode_steps: int
    mean_decode_batch: float
    preemptions: int
    stage_utilization: tuple[float, ...]  # busy time / makespan, per stage


@dataclass
class LinkReport:
    prefill: int
    decode: int
    transfers: int
    utilization: float
    peak_concurrent: int


@dataclass
class SimResult:
    plan: str  # planner name, cluster, model
    workload: str
    price_per_hour: float  # of the devices the plan uses
    arrival: np.ndarray
    first_token: np.ndarray  # NaN for a rejected request
    finish: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    preemptions: np.ndarray
    rejected: np.ndarray  # bool
    replica: np.ndarray  # the replica that prefilled each request
    decoder: np.ndarray  # disaggregated: the replica that decoded it (-1 when its entry replica did)
    finished_count: int  # completions and rejections counted by the simulator (once each, or a bug)
    occupancy_s: float  # integral over time of the requests in the system (Little's law check)
    events: int
    wall_s: float
    replicas: list[ReplicaReport] = field(default_factory=list)
    links: list[LinkReport] = field(default_factory=list)
    predicted_rps: float = 0.0  # the plan's predicted peak requests/s

    @property
    def completed(self) -> np.ndarray:
        return ~self.rejected & ~np.isnan(self.finish)

    @property
    def makespan(self) -> float:
        done = self.completed
        return float(self.finish[done].max() - self.arrival.min()) if done.any() else 0.0
