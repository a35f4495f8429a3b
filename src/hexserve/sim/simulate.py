"""Replay a workload against a plan: `simulate(plan, cluster, model, workload, calibration) -> SimResult`.

The plan is executed as it is: its replicas, stages, layer ranges, shares and P->D routes. Each
request goes to an entry replica (colocated or prefill) by the router; a prefill replica hands it to
a decode replica along the plan's routes, over that route's shared KV link. Arrivals are chained (the
next one is scheduled when one arrives) so the event heap stays small on long traces.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from hexserve.costmodel.calibration import Calibration
from hexserve.costmodel.memory import MAX_SEQS
from hexserve.planner.plan import Plan
from hexserve.planner.stagecost import CostTable
from hexserve.planner.validate import validate_plan
from hexserve.sim.costs import ReplicaCosts
from hexserve.sim.events import EventLoop
from hexserve.sim.handoff import route_link
from hexserve.sim.link import SharedLink
from hexserve.sim.replica import ReplicaSim
from hexserve.sim.result import LinkReport, ReplicaReport, SimResult
from hexserve.sim.router import ROUTERS, LeastLoadedRouter, SharesRouter
from hexserve.sim.sequence import Seq
from hexserve.specs.cluster import Cluster
from hexserve.specs.model import ModelSpec
from hexserve.specs.workload import Workload

Progress = Callable[[int, int], None]  # (requests finished or rejected, total)


class Simulation:
    def __init__(self, plan: Plan, table: CostTable, router: str, max_seqs: int | None):
        self.plan, self.loop = plan, EventLoop()
        self.done, self.in_system, self.occupancy, self.last = 0, 0, 0.0, 0.0
        self.replicas = [
            ReplicaSim(i, r.role, ReplicaCosts(table, r), self.loop, self._max_seqs(r, max_seqs),
                       self._finished, self._prefilled)
            for i, r in enumerate(plan.replicas)
        ]
        self.entries = [i for i, r in enumerate(plan.replicas) if r.role in ("colocated", "prefill")]
        self.entry_router = self._router(router, self.entries)
        self.routes = plan.routes()
        self.decode_routers = {p: SharesRouter([s for _, s in rs]) for p, rs in self.routes.items()}
        self.links: dict[tuple[int, int], SharedLink] = {
            (p, d): route_link(table, self.loop, self.replicas[p].costs, self.replicas[d].costs)
            for p, rs in self.routes.items() for d, _ in rs
        }

    @staticmethod
    def _max_seqs(replica, override: int | None) -> int:
        """Sequences per batch slot: the plan's micro-batch (its operating point), unless overridden."""
        if override:
            return override
        return replica.predicted.micro_batch if replica.predicted else MAX_SEQS

    def _router(self, kind: str, members: list[int]):
        if kind == "shares":
            return SharesRouter([self.plan.replicas[i].share for i in members])
        rates = [p.requests_per_s if (p := self.plan.replicas[i].predicted) else 1.0 for i in members]
        return LeastLoadedRouter(lambda k: self.replicas[members[k]].outstanding, rates)

    # ------------------------------------------------------------------ request flow

    def _tick(self) -> None:
        now = self.loop.now
        self.occupancy += self.in_system * (now - self.last)
        self.last = now

    def arrive(self, seq: Seq, rest: list[Seq], at: int) -> None:
        self._tick()
        self.in_system += 1
        if at < len(rest):
            self.loop.at(rest[at].arrival, self.arrive, rest[at], rest, at + 1)
        k = self.entry_router.pick(lambda k: self._fits_path(self.entries[k], seq))
        if k is None:
            seq.rejected = True
            self._finished(seq)
            return
        self.replicas[self.entries[k]].submit(seq)

    def _fits_path(self, entry: int, seq: Seq) -> bool:
        """The entry replica, and some decode replica after it, can hold the whole sequence's KV."""
        tokens = seq.prompt + seq.output
        if not self.replicas[entry].holds(seq.prompt if self.plan.replicas[entry].role == "prefill" else tokens):
            return False
        return entry not in self.routes or any(self.replicas[d].holds(tokens) for d, _ in self.routes[entry])

    def _prefilled(self, source: ReplicaSim, seq: Seq) -> None:
        options = self.routes[source.index]
        tokens = seq.prompt + seq.output
        k = self.decode_routers[source.index].pick(lambda k: self.replicas[options[k][0]].holds(tokens))
        d = options[k][0]
        self.replicas[d].pull(seq, source, self.links[(source.index, d)])

    def _finished(self, seq: Seq) -> None:
        self._tick()
        self.in_system -= 1
        self.done += 1


def _prepare(workload: Workload) -> list[Seq]:
    return [Seq(i, r.arrival_s, r.prompt_len, r.output_len) for i, r in enumerate(workload.requests)]


def _run(sim: Simulation, seqs: list[Seq], progress: Progress | None) -> None:
    sim.loop.at(seqs[0].arrival, sim.arrive, seqs[0], seqs, 1)
    if progress is None:
        sim.loop.run()
        return
    step = max(1.0, (seqs[-1].arrival - seqs[0].arrival) / 200)
    horizon = seqs[0].arrival
    while len(sim.loop):
        horizon += step
        sim.loop.run(until=horizon)
        progress(sim.done, len(seqs))


def _report(sim: Simulation, makespan: float) -> tuple[list[ReplicaReport], list[LinkReport]]:
    span = max(makespan, 1e-12)
    replicas = [
        ReplicaReport(
            r.index, r.role, r.costs.num_stages, r.pool.capacity, r.pool.peak, r.stats.prefill_steps,
            r.stats.decode_steps, r.stats.decode_batch_sum / max(r.stats.decode_steps, 1), r.stats.preemptions,
            tuple(b / span for b in r.stage_busy),
        )
        for r in sim.replicas
    ]
    links = [LinkReport(p, d, link.transfers, link.busy_s / span, link.peak_concurrent)
             for (p, d), link in sim.links.items()]
    return replicas, links


def simulate(
    plan: Plan,
    cluster: Cluster,
    model: ModelSpec,
    workload: Workload,
    calibration: Calibration,
    router: str = "shares",
    max_seqs: int | None = None,
    progress: Progress | None = None,
) -> SimResult:
    """Replay `workload` (arrival times as given) on `plan`; every time comes from the cost model."""
    from hexserve.errors import SpecError

    if router not in ROUTERS:
        raise SpecError(f"--router: unknown router {router!r}; use one of {', '.join(ROUTERS)}")
    if not workload.requests:
        raise SpecError(f"workload {workload.name!r}: no requests to simulate")
    validate_plan(plan, cluster, model, calibration)
    began = time.perf_counter()
    sim = Simulation(plan, CostTable(model, cluster, calibration, plan.workload), router, max_seqs)
    seqs = _prepare(workload)
    _run(sim, seqs, progress)
    col = lambda f, dtype=float: np.array([f(s) for s in seqs], dtype=dtype)  # noqa: E731
    result = SimResult(
        plan=f"{plan.planner} on {plan.cluster} ({plan.model})",
        workload=workload.name,
        price_per_hour=sum(cluster.devices[d].price_per_hour for r in plan.replicas for d in r.devices),
        arrival=col(lambda s: s.arrival), first_token=col(lambda s: s.first_token), finish=col(lambda s: s.finish),
        prompt=col(lambda s: s.prompt, int), output=col(lambda s: s.output, int),
        preemptions=col(lambda s: s.preemptions, int), rejected=col(lambda s: s.rejected, bool),
        replica=col(lambda s: s.entry, int), decoder=col(lambda s: s.decoder, int),
        finished_count=sim.done, occupancy_s=sim.occupancy,
        events=sim.loop.processed,
        wall_s=time.perf_counter() - began,
        predicted_rps=plan.predicted.requests_per_s if plan.predicted else 0.0,
    )
    result.replicas, result.links = _report(sim, result.makespan)
    return result
