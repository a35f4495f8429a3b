"""A cluster: nodes of devices, the links between every pair of devices, and its price.

The YAML file (examples/clusters/*.yaml, docs/clusters.md) is validated with pydantic and turned into
frozen data classes; `Cluster.graph()` gives the device graph the planners partition.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hexserve.errors import SpecError
from hexserve.specs.examples import example_names, examples_dir
from hexserve.specs.files import read_yaml
from hexserve.specs.gpus import DeviceType, lookup_device_type
from hexserve.specs.links import LINK_KINDS, Link, lookup_link_kind

# ----------------------------------------------------------------------------- the file, as written


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LinkSpec(_Strict):
    """A link by kind (published defaults), by numbers, or a kind with some numbers overridden."""

    kind: str | None = None
    bandwidth_gbps: float | None = Field(default=None, gt=0)
    latency_us: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _has_bandwidth(self) -> LinkSpec:
        if self.kind is None and self.bandwidth_gbps is None:
            kinds = ", ".join(LINK_KINDS)
            raise ValueError(f"missing bandwidth: give bandwidth_gbps (GB/s, > 0) or kind: one of {kinds}")
        return self


class GpuSpec(_Strict):
    type: str
    count: int = Field(default=1, gt=0)
    memory_gib: float | None = Field(default=None, gt=0)
    mem_bandwidth_gbps: float | None = Field(default=None, gt=0)
    tflops: float | None = Field(default=None, gt=0)
    price_per_hour: float | None = Field(default=None, ge=0)


class NodeSpec(_Strict):
    name: str
    gpus: list[GpuSpec] = Field(min_length=1)
    intra_link: LinkSpec | None = None
    host_memory_gib: float = Field(default=256, gt=0)
    pcie_gbps: float = Field(default=32, gt=0)


class PairSpec(LinkSpec):
    between: tuple[str, str]


class InterNodeSpec(_Strict):
    default: LinkSpec
    pairs: list[PairSpec] = Field(default_factory=list)


class ClusterSpec(_Strict):
    name: str
    description: str = ""
    nodes: list[NodeSpec] = Field(min_length=1)
    inter_node: InterNodeSpec | None = None


# ----------------------------------------------------------------------------- the cluster, as used


@dataclass(frozen=True)
class Device:
    index: int  # global, 0..N-1 in file order
    node: str
    local_index: int
    type: DeviceType

    @property
    def name(self) -> str:
        return f"{self.node}/{self.local_index}"

    @property
    def price_per_hour(self) -> float:
        return self.type.price_per_hour


@dataclass(frozen=True)
class Node:
    name: str
    devices: tuple[Device, ...]
    intra_link: Link
    host_memory_gib: float
    pcie_gbps: float  # host <-> device, for CPU offload


@dataclass(frozen=True)
class Cluster:
    name: str
    nodes: tuple[Node, ...]
    inter_node_default: Link
    inter_node_pairs: dict[frozenset[str], Link] = field(default_factory=dict)
    description: str = ""

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(d for n in self.nodes for d in n.devices)

    @property
    def price_per_hour(self) -> float:
        return sum(d.price_per_hour for d in self.devices)

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def link(self, a: Device, b: Device) -> Link:
        """The link between two distinct devices."""
        if a.node == b.node:
            return self.node(a.node).intra_link
        return self.inter_node_pairs.get(frozenset((a.node, b.node)), self.inter_node_default)

    def slowest_link(self, devices: list[Device] | tuple[Device, ...]) -> Link | None:
        """The narrowest bandwidth and the longest latency among a group's pairs (None for one device).

        A ring collective over the group moves at the pace of its slowest hop.
        """
        links = [self.link(a, b) for a, b in itertools.combinations(devices, 2)]
        if not links:
            return None
        narrowest = min(links, key=lambda k: k.bandwidth_gbps)
        return Link(narrowest.bandwidth_gbps, max(k.latency_us for k in links), narrowest.kind)

    def graph(self) -> nx.Graph:
        """Devices as nodes (attribute `device`), every pair joined by an edge with `bandwidth` (B/s),
        `latency` (s) and `link`."""
        g = nx.Graph(name=self.name)
        for d in self.devices:
            g.add_node(d.index, device=d)
        for a, b in itertools.combinations(self.devices, 2):
            link = self.link(a, b)
            g.add_edge(a.index, b.index, bandwidth=link.bandwidth, latency=link.latency, link=link)
        return g

    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for d in self.devices:
            counts[d.type.name] = counts.get(d.type.name, 0) + 1
        return counts


# ----------------------------------------------------------------------------- building and loading


def _link(spec: LinkSpec, field_name: str) -> Link:
    base = lookup_link_kind(spec.kind, f"{field_name}.kind") if spec.kind else None
    bandwidth = spec.bandwidth_gbps if spec.bandwidth_gbps is not None else base.bandwidth_gbps
    latency = spec.latency_us if spec.latency_us is not None else (base.latency_us if base else 10.0)
    return Link(bandwidth, latency, spec.kind or "custom")


def _device_type(spec: GpuSpec, field_name: str) -> DeviceType:
    base = lookup_device_type(spec.type, f"{field_name}.type")
    if base.is_cpu:
        for name in ("memory_gib", "mem_bandwidth_gbps"):
            if getattr(spec, name) is None:
                raise SpecError(f"{field_name}.{name}: a cpu device has no catalogue default; give {name} (> 0)")
    return base.with_overrides(
        memory_gib=spec.memory_gib,
        mem_bandwidth_gbps=spec.mem_bandwidth_gbps,
        tflops=spec.tflops,
        price_per_hour=spec.price_per_hour,
    )


def _default_intra_link(types: list[DeviceType]) -> Link:
    """NVLink for SXM data-centre parts, shared memory for CPU processes, PCIe 4 otherwise."""
    names = {t.name for t in types}
    if names <= {"H100-SXM", "H200-SXM"}:
        return LINK_KINDS["nvlink4"]
    if names <= {"A100-80GB", "A100-40GB"}:
        return LINK_KINDS["nvlink3"]
    if all(t.is_cpu for t in types):
        return LINK_KINDS["shm"]
    return LINK_KINDS["pcie4"]


def build_cluster(spec: ClusterSpec) -> Cluster:
    names = [n.name for n in spec.nodes]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise SpecError(f"nodes: node name {duplicate!r} appears twice; give every node its own name")
    nodes, index = [], 0
    for i, node in enumerate(spec.nodes):
        types = [_device_type(g, f"nodes[{i}].gpus[{j}]") for j, g in enumerate(node.gpus)]
        devices = []
        for t, g in zip(types, node.gpus, strict=True):
            for _ in range(g.count):
                devices.append(Device(index, node.name, len(devices), t))
                index += 1
        intra = _link(node.intra_link, f"nodes[{i}].intra_link") if node.intra_link else _default_intra_link(types)
        nodes.append(Node(node.name, tuple(devices), intra, node.host_memory_gib, node.pcie_gbps))
    inter = spec.inter_node
    if inter is None and len(nodes) > 1:
        raise SpecError("inter_node: a cluster of several nodes needs inter_node.default (e.g. {kind: ib-hdr})")
    default = _link(inter.default, "inter_node.default") if inter else LINK_KINDS["eth-100g"]
    pairs = {}
    for k, pair in enumerate(inter.pairs if inter else []):
        for end in pair.between:
            if end not in names:
                raise SpecError(f"inter_node.pairs[{k}].between: no node named {end!r}; nodes are {', '.join(names)}")
        pairs[frozenset(pair.between)] = _link(pair, f"inter_node.pairs[{k}]")
    return Cluster(spec.name, tuple(nodes), default, pairs, spec.description)


def _field_path(loc: tuple) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def _explain(error: dict) -> str:
    """One pydantic error as 'field: problem; fix'."""
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    where = _field_path(loc)
    kind, message = error["type"], error["msg"]
    if kind == "missing":
        return f"{where}: required field is missing; add it"
    if kind == "extra_forbidden":
        return f"{where}: unknown field; remove it or check its spelling (docs/clusters.md lists the fields)"
    if kind == "value_error":
        return f"{where}: {message.removeprefix('Value error, ')}"
    return f"{where}: {message[0].lower()}{message[1:]} (got {error.get('input')!r})"


def parse_cluster(data: object, source: str = "cluster") -> Cluster:
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(f"{source}: {_explain(e.errors()[0])}") from None
    return build_cluster(spec)


def resolve_cluster_path(path_or_name: str) -> Path:
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = examples_dir() / "clusters" / f"{path_or_name}.yaml"
    if shipped.is_file():
        return shipped
    known = ", ".join(example_names("clusters"))
    raise SpecError(f"cluster: no file {path_or_name!r}; give a YAML path or a shipped name ({known})")


def load_cluster(path_or_name: str) -> Cluster:
    """A cluster from a YAML file, or a shipped example by its short name (e.g. "hetero-1")."""
    path = resolve_cluster_path(path_or_name)
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping with name and nodes at the top level")
    return parse_cluster(data, str(path))


_GPU_ITEM = re.compile(r"^\s*(?:(\d+)\s*[x*]\s*)?([A-Za-z0-9][\w.-]*)\s*$")


def cluster_from_gpus(gpus: str, name: str = "adhoc") -> Cluster:
    """A one-node cluster from a list such as "2xa100-80gb,1xl40" (links take the node's default)."""
    specs = []
    for item in gpus.split(","):
        match = _GPU_ITEM.match(item)
        if not match:
            raise SpecError(f"--gpus: cannot read {item!r}; write COUNTxTYPE items joined by commas, e.g. 2xa100,1xl40")
        count, type_name = match.groups()
        if count is not None and int(count) <= 0:
            raise SpecError(f"--gpus: count in {item!r} must be > 0")
        lookup_device_type(type_name, "--gpus")
        specs.append({"type": type_name, "count": int(count or 1)})
    data = {"name": name, "nodes": [{"name": "node0", "gpus": specs}]}
    return parse_cluster(data, "--gpus")
