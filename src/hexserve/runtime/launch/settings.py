"""What a plan's replicas run with. At launch the plan is checked as the planner checks it (model and
cluster fingerprints, layout, memory: `planner.validate.validate_plan`), and each replica takes the
operating point the planner predicted for it (sequences in flight, micro-batches, KV tokens) unless
the user gives one: the throughput and TPOT the plan promises hold only at that point.
"""

from __future__ import annotations

from dataclasses import dataclass

from hexserve.costmodel.calibration import load_calibration
from hexserve.errors import SpecError
from hexserve.planner.plan import Plan, Replica
from hexserve.planner.validate import validate_plan
from hexserve.runtime.scheduler import DEFAULT_MAX_NUM_SEQS
from hexserve.specs.cluster import Cluster, load_cluster
from hexserve.specs.model import ModelSpec


@dataclass(frozen=True)
class ReplicaSettings:
    max_num_seqs: int  # sequences in flight over all micro-batches
    micro_batches: int
    kv_blocks: int  # KV blocks wanted per device (the device may hold fewer)
    source: str  # where the numbers came from: "plan", "user" or "default" (printed at launch)


def check_plan(plan: Plan, model: ModelSpec, cluster: str | Cluster | None = None) -> Cluster:
    """The plan's cluster (`cluster`: a Cluster, a YAML file or a shipped name; default the plan's own),
    after checking that the plan runs on it and on this checkpoint's model; a one-line SpecError otherwise."""
    if isinstance(cluster, Cluster):
        found = cluster
    else:
        try:
            found = load_cluster(cluster or plan.cluster)
        except SpecError as e:
            raise SpecError(f"{e} (the plan's cluster); give its cluster file with --cluster") from None
    validate_plan(plan, found, model, load_calibration())
    roles = {r.role for r in plan.replicas}
    if ("prefill" in roles) != ("decode" in roles):
        missing = "decode" if "prefill" in roles else "prefill"
        raise SpecError(f"plan.replicas: a disaggregated plan needs {missing} replicas too; re-plan it")
    return found


def replica_settings(
    replica: Replica,
    block_size: int,
    max_model_len: int,
    max_num_seqs: int | None = None,
    micro_batches: int | None = None,
    num_kv_blocks: int | None = None,
) -> ReplicaSettings:
    """The replica's operating point: what the user gave, else the plan's prediction, else defaults.

    KV: the tokens the planner reserved for its batch, but never less than one full-length sequence per
    micro-batch, so that the model's whole context stays usable (the planner sized for its workload's
    lengths, a request may be longer)."""
    predicted = replica.predicted
    seqs = max_num_seqs or (predicted.in_flight if predicted else DEFAULT_MAX_NUM_SEQS)
    planned_depth = max(1, predicted.in_flight // max(predicted.micro_batch, 1)) if predicted else None
    depth = micro_batches or planned_depth or len(replica.stages)
    lone = depth * -(-max_model_len // block_size)
    if num_kv_blocks:
        blocks = num_kv_blocks
    elif predicted:
        blocks = max(-(-predicted.kv_tokens // block_size), lone)
    else:
        blocks = max(-(-seqs * max_model_len // block_size), lone)
    given = (max_num_seqs, micro_batches, num_kv_blocks)
    source = "user" if all(given) else ("plan" if predicted else "default") + (" and user" if any(given) else "")
    return ReplicaSettings(max(seqs, depth), depth, blocks, source)
