"""Who is who in a plan's worker processes: one worker per device of every replica's stages, a global
rank for each, and every process group the runtime needs, all known before any process starts.

Groups (each a tuple of global ranks, built by every worker at start in this order):
- the TP group of each stage wider than one device;
- stage-boundary pairs: every rank of stage i with every rank of stage i+1 (hidden states go directly
  from the senders to the receivers, spread over the senders).

KV transfers of a disaggregated plan go point-to-point over the world group (`runtime/kv_transfer.py`):
any prefill rank may reach any decode rank, whatever the routes, so a route can change on a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from hexserve.planner.plan import Plan


@dataclass(frozen=True)
class WorkerSpec:
    rank: int  # global rank among all the plan's workers
    replica: int
    stage: int
    tp_rank: int
    device_id: int  # the cluster's device index, from the plan
    layers: tuple[int, int]  # [first, end)
    stage_ranks: tuple[int, ...]  # global ranks of this stage, in TP-rank order
    prev_ranks: tuple[int, ...]  # of the stage before (empty on the first stage)
    next_ranks: tuple[int, ...]  # of the stage after (empty on the last stage)

    @property
    def tp_size(self) -> int:
        return len(self.stage_ranks)

    @property
    def is_first(self) -> bool:
        return not self.prev_ranks

    @property
    def is_last(self) -> bool:
        return not self.next_ranks

    @property
    def samples(self) -> bool:
        """The one worker of a replica that samples and answers the leader: last stage, TP rank 0."""
        return self.is_last and self.tp_rank == 0

    @property
    def name(self) -> str:
        return f"device {self.device_id} (replica {self.replica}, stage {self.stage}, TP rank {self.tp_rank})"


def plan_workers(plan: Plan) -> list[WorkerSpec]:
    """Every worker of the plan, replica by replica, stage by stage, in global rank order."""
    stage_ranks: list[list[tuple[int, ...]]] = []
    rank = 0
    for replica in plan.replicas:
        stage_ranks.append([])
        for stage in replica.stages:
            stage_ranks[-1].append(tuple(range(rank, rank + len(stage.devices))))
            rank += len(stage.devices)
    workers = []
    for r, replica in enumerate(plan.replicas):
        ranks = stage_ranks[r]
        for s, stage in enumerate(replica.stages):
            for t, device in enumerate(stage.devices):
                workers.append(WorkerSpec(
                    rank=ranks[s][t], replica=r, stage=s, tp_rank=t, device_id=device, layers=stage.layers,
                    stage_ranks=ranks[s], prev_ranks=ranks[s - 1] if s else (),
                    next_ranks=ranks[s + 1] if s + 1 < len(ranks) else (),
                ))
    return workers


def plan_groups(workers: list[WorkerSpec]) -> list[tuple[int, ...]]:
    """Every process group, in the order each worker creates them (the same on all)."""
    groups: list[tuple[int, ...]] = []
    stages = sorted({w.stage_ranks for w in workers})
    groups += [ranks for ranks in stages if len(ranks) > 1]
    for w in workers:
        groups += [(w.rank, receiver) for receiver in w.next_ranks]
    return list(dict.fromkeys(groups))
