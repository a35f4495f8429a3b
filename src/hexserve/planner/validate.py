"""Check a plan against the cluster and model it will run on; every failure is one line."""

from __future__ import annotations

from hexserve.costmodel.calibration import Calibration
from hexserve.costmodel.memory import stage_memory
from hexserve.costmodel.stage import StageShape, slowest_type
from hexserve.errors import SpecError
from hexserve.planner.plan import ROLES, Plan, Replica, cluster_fingerprint, model_fingerprint
from hexserve.specs.cluster import Cluster
from hexserve.specs.model import ModelSpec

GIB = 2**30


def _check_identity(plan: Plan, cluster: Cluster, model: ModelSpec) -> None:
    if plan.model_fingerprint != model_fingerprint(model):
        raise SpecError(
            f"plan.model_fingerprint: the plan was made for another config of {plan.model!r} than {model.name!r}; "
            "re-plan for this model"
        )
    if plan.cluster_fingerprint != cluster_fingerprint(cluster):
        raise SpecError(
            f"plan.cluster_fingerprint: the plan was made for another cluster than {cluster.name!r} "
            "(devices or links differ); re-plan for this cluster"
        )
    if not plan.replicas:
        raise SpecError("plan.replicas: the plan has no replica; re-plan (nothing fitted?)")


def _check_devices(plan: Plan, cluster: Cluster) -> None:
    n = len(cluster.devices)
    seen: dict[int, str] = {}
    for i, r in enumerate(plan.replicas):
        for j, s in enumerate(r.stages):
            where = f"plan.replicas[{i}].stages[{j}].devices"
            if not s.devices:
                raise SpecError(f"{where}: a stage needs at least one device")
            for d in s.devices:
                if not 0 <= d < n:
                    raise SpecError(
                        f"{where}: device {d} does not exist ({cluster.name} has devices 0-{n - 1}); fix the id"
                    )
                if d in seen:
                    raise SpecError(f"{where}: device {d} is already used by {seen[d]}; give each device to one stage")
                seen[d] = f"replica {i} stage {j}"


def _check_stages(i: int, r: Replica, model: ModelSpec) -> None:
    where = f"plan.replicas[{i}]"
    if r.role not in ROLES:
        raise SpecError(f"{where}.role: unknown role {r.role!r}; use one of {', '.join(ROLES)}")
    if not r.stages:
        raise SpecError(f"{where}.stages: a replica needs at least one stage")
    valid = model.valid_tp_degrees(64)
    expected = 0
    for j, s in enumerate(r.stages):
        at = f"{where}.stages[{j}]"
        if s.tp != len(s.devices):
            raise SpecError(f"{at}.tp: TP {s.tp} but {len(s.devices)} devices; a stage's TP degree is its device count")
        if s.tp not in valid:
            raise SpecError(
                f"{at}.tp: TP {s.tp} does not divide {model.name}'s {model.num_heads} heads and {model.num_kv_heads} "
                f"KV heads; use one of {', '.join(map(str, valid[:8]))}"
            )
        first, end = s.layers
        if first != expected or end <= first:
            raise SpecError(
                f"{at}.layers: [{first}, {end}) should start at layer {expected} and hold at least one layer; "
                "stages must cover the layers in order, each once"
            )
        expected = end
    if expected != model.num_layers:
        raise SpecError(
            f"{where}.stages: layers end at {expected} but {model.name} has {model.num_layers}; cover every layer once"
        )


def _check_shares(plan: Plan) -> None:
    for group in (("colocated", "prefill"), ("decode",)):
        shares = [r.share for r in plan.replicas if r.role in group]
        if any(s < 0 for s in shares):
            raise SpecError("plan.replicas[].share: shares must be >= 0")
        if shares and abs(sum(shares) - 1) > 1e-6:
            total = f"{'/'.join(group)} shares sum to {sum(shares):.6f}"
            raise SpecError(f"plan.replicas[].share: {total}; they must sum to 1")


def _check_routing(plan: Plan) -> None:
    """Routes join a prefill replica to a decode replica, and each prefill replica's routes sum to 1."""
    if not plan.routing:
        return
    n = len(plan.replicas)
    sums: dict[int, float] = {}
    for i, route in enumerate(plan.routing):
        where = f"plan.routing[{i}]"
        for field, role in (("prefill", "prefill"), ("decode", "decode")):
            at = getattr(route, field)
            if not 0 <= at < n or plan.replicas[at].role != role:
                raise SpecError(f"{where}.{field}: replica {at} is not a {role} replica; route {role} to {role}")
        if route.share < 0 or route.requests_per_s < 0:
            raise SpecError(f"{where}: share and requests_per_s must be >= 0")
        sums[route.prefill] = sums.get(route.prefill, 0.0) + route.share
    for i, r in enumerate(plan.replicas):
        if r.role == "prefill" and abs(sums.get(i, 0.0) - 1) > 1e-6:
            raise SpecError(
                f"plan.routing: the routes of prefill replica {i} sum to {sums.get(i, 0.0):.6f}; they must sum to 1"
            )


def _check_memory(i: int, r: Replica, cluster: Cluster, model: ModelSpec, calibration: Calibration) -> None:
    kv_tokens = r.predicted.kv_tokens if r.predicted else 0
    last = len(r.stages) - 1
    for j, s in enumerate(r.stages):
        devices = [cluster.devices[d] for d in s.devices]
        link = cluster.slowest_link(devices)
        shape = StageShape(slowest_type([d.type for d in devices]), s.tp, s.num_layers, j == 0, j == last, link)
        for d in devices:
            use = stage_memory(model, shape, d.type, calibration)
            if not use.fits(kv_tokens):
                raise SpecError(
                    f"plan.replicas[{i}].stages[{j}]: device {d.index} ({d.name}, {d.type.name}) is short by "
                    f"{use.shortfall(kv_tokens) / GIB:.2f} GiB for {s.num_layers} layers and {kv_tokens:,} KV tokens; "
                    "give the stage fewer layers or more devices"
                )


def validate_plan(plan: Plan, cluster: Cluster, model: ModelSpec, calibration: Calibration) -> None:
    """Raise a one-line SpecError at the first thing in the plan that cannot run on this cluster and model."""
    _check_identity(plan, cluster, model)
    _check_devices(plan, cluster)
    for i, r in enumerate(plan.replicas):
        _check_stages(i, r, model)
    _check_shares(plan)
    _check_routing(plan)
    for i, r in enumerate(plan.replicas):
        _check_memory(i, r, cluster, model, calibration)
