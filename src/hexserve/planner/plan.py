"""The plan file: the one contract the simulator and the runtime execute as it is.

A plan names the model (and a fingerprint of its architecture) and the cluster (and a fingerprint of
its devices and links), the workload it was made for, and its replicas. A replica has a role
(colocated, prefill or decode: HexGen-2 plans reuse this file), its share of the requests, and its
pipeline stages in order; a stage has device ids (rank order), a TP degree and a layer range
[first, end). A disaggregated plan adds `routing`: which decode replica takes what share of each
prefill replica's requests (from the max-flow). The cost model's predictions ride along for the
explanation and the simulator. `load_plan` checks the file's structure; `validate.validate_plan`
checks it against a cluster and model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hexserve.errors import SpecError
from hexserve.planner.workload import Workload
from hexserve.specs.cluster import Cluster
from hexserve.specs.model import ModelSpec

PLAN_VERSION = 1
ROLES = ("colocated", "prefill", "decode")


@dataclass(frozen=True)
class StagePrediction:
    prefill_s: float  # one prompt through the stage
    decode_step_s: float  # one micro-batch decode step
    busy_s: float  # stage time per request: its prefill and its share of decode steps
    memory_used_bytes: tuple[int, ...]  # per device: weights, workspace and the reserved KV
    memory_usable_bytes: tuple[int, ...]
    bottleneck: str  # compute | memory bandwidth | link


@dataclass(frozen=True)
class Stage:
    devices: tuple[int, ...]
    tp: int
    layers: tuple[int, int]  # [first, end)
    predicted: StagePrediction | None = None

    @property
    def num_layers(self) -> int:
        return self.layers[1] - self.layers[0]


@dataclass(frozen=True)
class ReplicaPrediction:
    tokens_per_s: float
    requests_per_s: float
    ttft_s: float
    tpot_s: float
    latency_s: float
    unloaded_latency_s: float
    micro_batch: int
    in_flight: int  # sequences decoding at once
    kv_tokens: int  # KV tokens reserved: in_flight x (prompt + output)
    bottleneck: str
    limit: str  # what stops a larger batch
    price_per_hour: float
    usd_per_million_tokens: float


@dataclass(frozen=True)
class Replica:
    role: str
    stages: tuple[Stage, ...]
    share: float  # fraction of the requests routed here
    predicted: ReplicaPrediction | None = None

    @property
    def devices(self) -> tuple[int, ...]:
        return tuple(d for s in self.stages for d in s.devices)


@dataclass(frozen=True)
class Route:
    """Disaggregated plans: the requests prefill replica `prefill` hands to decode replica `decode`
    (indices into Plan.replicas), with their KV cache. `share` is the fraction of the prefill replica's
    requests; a prefill replica's routes sum to 1."""

    prefill: int
    decode: int
    share: float
    requests_per_s: float  # the max-flow's flow on this edge
    capacity_per_s: float  # what the link between the two can carry (KV bytes per request / bandwidth)


@dataclass(frozen=True)
class PlanPrediction:
    tokens_per_s: float
    requests_per_s: float
    price_per_hour: float  # of the devices the plan uses
    usd_per_million_tokens: float


@dataclass(frozen=True)
class Plan:
    model: str
    model_fingerprint: str
    cluster: str
    cluster_fingerprint: str
    workload: Workload
    replicas: tuple[Replica, ...]
    planner: str = "hexgen"  # or baseline:symmetric, ...
    objective: str = "throughput"
    seed: int | None = None
    predicted: PlanPrediction | None = None
    version: int = PLAN_VERSION
    routing: tuple[Route, ...] = ()  # P->D routes of a disaggregated plan (empty for colocated plans)
    notes: tuple[str, ...] = ()  # the planner's log: kept refinement moves, why a mode was chosen

    def routes(self) -> dict[int, list[tuple[int, float]]]:
        """Per prefill replica: (decode replica, share) of its requests. Without a routing table, every
        decode replica by its share of the decode requests. The simulator and the runtime route by it."""
        table: dict[int, list[tuple[int, float]]] = {}
        for r in self.routing:
            table.setdefault(r.prefill, []).append((r.decode, r.share))
        decodes = [(i, r.share) for i, r in enumerate(self.replicas) if r.role == "decode"]
        for i, r in enumerate(self.replicas):
            if r.role == "prefill" and i not in table:
                table[i] = decodes
        return table

    def to_json(self) -> dict:
        data = asdict(self)
        data["workload"] = self.workload.to_json()
        for optional in ("routing", "notes"):  # absent when empty: colocated plan files stay as they were
            if not data[optional]:
                data.pop(optional)
        return {"version": data.pop("version"), **data}


# ----------------------------------------------------------------------------- fingerprints


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(model: ModelSpec) -> str:
    """The architecture numbers, not the name or the stored dtype: a renamed copy of a config, or a float32
    copy of a bfloat16 checkpoint (the embedded SmolLM2 is one), runs the same plan."""
    numbers = {k: v for k, v in asdict(model).items() if k not in ("name", "dtype")}
    return _digest(numbers)


def cluster_fingerprint(cluster: Cluster) -> str:
    devices = [(d.index, d.node, asdict(d.type)) for d in cluster.devices]
    links = [(n.name, asdict(n.intra_link)) for n in cluster.nodes]
    pairs = sorted((sorted(k), asdict(v)) for k, v in cluster.inter_node_pairs.items())
    return _digest([devices, links, asdict(cluster.inter_node_default), pairs])


# ----------------------------------------------------------------------------- reading


def _need(data: dict, key: str, kind: type | tuple[type, ...], where: str) -> object:
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object; re-create the plan with `hexserve plan`")
    if key not in data:
        raise SpecError(f"{where}.{key}: required field is missing; add it or re-create the plan")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise SpecError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def _build(cls: type, data: object, where: str) -> object | None:
    """A prediction dataclass from its JSON object (lists become tuples)."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected an object or null")
    names = [f.name for f in fields(cls)]
    missing = [n for n in names if n not in data]
    if missing:
        raise SpecError(f"{where}.{missing[0]}: required field is missing; re-create the plan")
    return cls(**{n: tuple(data[n]) if isinstance(data[n], list) else data[n] for n in names})


def _int_list(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise SpecError(f"{where}: expected a list of integers, got {value!r}")
    return tuple(value)


def _stage(data: dict, where: str) -> Stage:
    layers = _int_list(_need(data, "layers", list, where), f"{where}.layers")
    if len(layers) != 2:
        raise SpecError(f"{where}.layers: expected [first, end), got {list(layers)}")
    return Stage(
        devices=_int_list(_need(data, "devices", list, where), f"{where}.devices"),
        tp=_need(data, "tp", int, where),
        layers=(layers[0], layers[1]),
        predicted=_build(StagePrediction, data.get("predicted"), f"{where}.predicted"),
    )


def _replica(data: dict, where: str) -> Replica:
    stages = _need(data, "stages", list, where)
    return Replica(
        role=_need(data, "role", str, where),
        stages=tuple(_stage(s, f"{where}.stages[{j}]") for j, s in enumerate(stages)),
        share=float(_need(data, "share", (int, float), where)),
        predicted=_build(ReplicaPrediction, data.get("predicted"), f"{where}.predicted"),
    )


def _routes(data: object, where: str) -> tuple[Route, ...]:
    if data is None:
        return ()
    if not isinstance(data, list):
        raise SpecError(f"{where}: expected a list of routes")
    return tuple(_build(Route, r, f"{where}[{i}]") for i, r in enumerate(data))


def _notes(data: object, where: str) -> tuple[str, ...]:
    if data is None:
        return ()
    if not isinstance(data, list) or not all(isinstance(n, str) for n in data):
        raise SpecError(f"{where}: expected a list of strings")
    return tuple(data)


def plan_from_json(data: object, where: str = "plan") -> Plan:
    """A Plan from its parsed JSON; structure errors are one line naming the field."""
    version = _need(data, "version", int, where)
    if version != PLAN_VERSION:
        raise SpecError(
            f"{where}.version: version {version} is not supported (this hexserve reads {PLAN_VERSION}); re-plan"
        )
    workload = _need(data, "workload", dict, where)
    try:
        parsed_workload = Workload.from_json(workload)
    except TypeError as e:
        raise SpecError(f"{where}.workload: {e}; re-create the plan") from None
    replicas = _need(data, "replicas", list, where)
    seed = data.get("seed")
    return Plan(
        model=_need(data, "model", str, where),
        model_fingerprint=_need(data, "model_fingerprint", str, where),
        cluster=_need(data, "cluster", str, where),
        cluster_fingerprint=_need(data, "cluster_fingerprint", str, where),
        workload=parsed_workload,
        replicas=tuple(_replica(r, f"{where}.replicas[{i}]") for i, r in enumerate(replicas)),
        planner=str(data.get("planner", "hexgen")),
        objective=str(data.get("objective", "throughput")),
        seed=seed if isinstance(seed, int) else None,
        predicted=_build(PlanPrediction, data.get("predicted"), f"{where}.predicted"),
        version=version,
        routing=_routes(data.get("routing"), f"{where}.routing"),
        notes=_notes(data.get("notes"), f"{where}.notes"),
    )


def save_plan(plan: Plan, path: str | Path) -> None:
    Path(path).write_text(json.dumps(plan.to_json(), indent=2) + "\n")


def load_plan(path: str | Path) -> Plan:
    """A plan file, its structure checked (check it against a cluster with validate.validate_plan)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SpecError(f"plan: no file {str(path)!r}; give the JSON that `hexserve plan --out` wrote") from None
    except json.JSONDecodeError as e:
        where = f"{path}: malformed JSON at line {e.lineno}, column {e.colno}"
        raise SpecError(f"{where}; fix the syntax ({e.msg})") from None
    return plan_from_json(data, str(path))
