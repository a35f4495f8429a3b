"""`hexserve estimate`: memory and time of one replica laid over a list of devices, device by device.

The layout is deliberately simple (the planners search for good ones): consecutive devices of one type
on one node form a stage whose TP degree is the widest the model allows, or every `tp` consecutive
devices form a stage when a degree is given; layers go to stages in proportion to the weight memory
each can hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hexserve.costmodel.calibration import Calibration
from hexserve.costmodel.latency import decode_step_time, pipeline_time, prefill_time
from hexserve.costmodel.memory import MemoryUse, stage_memory
from hexserve.costmodel.stage import StageShape, slowest_type
from hexserve.errors import SpecError
from hexserve.specs.cluster import Cluster, Device
from hexserve.specs.model import ModelSpec


@dataclass(frozen=True)
class Workload:
    """The request shapes the estimate is quoted for."""

    prompt_len: int = 1024
    decode_batch: int = 32
    context_len: int = 1024


@dataclass(frozen=True)
class DeviceEstimate:
    device: Device
    stage: int
    first_layer: int
    shape: StageShape
    memory: MemoryUse
    kv_tokens_needed: int
    prefill_s: float
    decode_step_s: float

    @property
    def fits(self) -> bool:
        return self.memory.fits(self.kv_tokens_needed)


@dataclass(frozen=True)
class Estimate:
    model: ModelSpec
    cluster: Cluster
    workload: Workload
    devices: list[DeviceEstimate]
    prefill_s: float
    decode_step_s: float
    calibration_source: str = field(default="built-in defaults")

    @property
    def fits(self) -> bool:
        return all(d.fits for d in self.devices)

    @property
    def max_kv_tokens(self) -> int:
        """Tokens the replica can cache: the stage with the smallest pool decides."""
        return min(d.memory.max_kv_tokens for d in self.devices)

    def shortfalls(self) -> list[str]:
        """What is short, device by device, in words."""
        return [
            f"{d.device.name} ({d.device.type.name}) is short by "
            f"{d.memory.shortfall(d.kv_tokens_needed) / 2**30:.2f} GiB"
            for d in self.devices
            if not d.fits
        ]

    def to_json(self) -> dict:
        m = self.model
        return {
            "model": m.name,
            "cluster": self.cluster.name,
            "params": m.params,
            "weights_bytes": m.weights_bytes,
            "kv_bytes_per_token": m.kv_bytes_per_token,
            "dtype": m.dtype,
            "workload": vars(self.workload),
            "fits": self.fits,
            "max_kv_tokens": self.max_kv_tokens,
            "prefill_ms": self.prefill_s * 1e3,
            "decode_step_ms": self.decode_step_s * 1e3,
            "price_per_hour": self.cluster.price_per_hour,
            "calibration": self.calibration_source,
            "shortfalls": self.shortfalls(),
            "devices": [
                {
                    "device": d.device.name,
                    "type": d.device.type.name,
                    "stage": d.stage,
                    "tp": d.shape.tp,
                    "layers": [d.first_layer, d.first_layer + d.shape.num_layers],
                    "memory_capacity_bytes": d.memory.capacity,
                    "memory_usable_bytes": d.memory.usable,
                    "weights_bytes": d.memory.weights,
                    "activation_bytes": d.memory.activations,
                    "memory_used_bytes": d.memory.used(d.kv_tokens_needed),
                    "fits": d.fits,
                    "max_kv_tokens": d.memory.max_kv_tokens,
                    "prefill_ms": d.prefill_s * 1e3,
                    "decode_step_ms": d.decode_step_s * 1e3,
                }
                for d in self.devices
            ],
        }


# ----------------------------------------------------------------------------- layout


def _widest_tp(model: ModelSpec, n: int) -> int:
    return max(t for t in model.valid_tp_degrees(n) if n % t == 0)


def stage_groups(model: ModelSpec, devices: tuple[Device, ...], tp: int | None) -> list[list[Device]]:
    """Devices cut into consecutive TP groups, one per pipeline stage."""
    if tp is not None:
        if tp not in model.valid_tp_degrees(tp):
            raise SpecError(
                f"--tp: {model.name} cannot be split {tp} ways ({model.num_heads} heads, {model.num_kv_heads} "
                f"KV heads); use one of {', '.join(map(str, model.valid_tp_degrees(len(devices))))}"
            )
        if len(devices) % tp:
            raise SpecError(f"--tp: {len(devices)} devices do not split into groups of {tp}; give a divisor")
        return [list(devices[i : i + tp]) for i in range(0, len(devices), tp)]
    runs: list[list[Device]] = []
    for d in devices:
        same = runs and runs[-1][-1].type.name == d.type.name and runs[-1][-1].node == d.node
        runs[-1].append(d) if same else runs.append([d])
    groups = []
    for run in runs:
        width = _widest_tp(model, len(run))
        groups += [run[i : i + width] for i in range(0, len(run), width)]
    return groups


def split_layers(num_layers: int, weights: list[float]) -> list[int]:
    """Layers in proportion to `weights`, at least one each, summing to num_layers (largest remainder)."""
    if len(weights) > num_layers:
        raise SpecError(
            f"layout: {len(weights)} pipeline stages but only {num_layers} layers; use fewer devices or a wider --tp"
        )
    shares = [num_layers * w / sum(weights) for w in weights]
    counts = [max(1, int(s)) for s in shares]
    while sum(counts) < num_layers:
        counts[max(range(len(counts)), key=lambda i: shares[i] - counts[i])] += 1
    while sum(counts) > num_layers:
        counts[max((i for i in range(len(counts)) if counts[i] > 1), key=lambda i: counts[i] - shares[i])] -= 1
    return counts


def _shapes(model: ModelSpec, cluster: Cluster, groups: list[list[Device]]) -> list[StageShape]:
    capacity = [len(g) * min(d.type.memory_gib for d in g) for g in groups]
    layers = split_layers(model.num_layers, capacity)
    last = len(groups) - 1
    return [
        StageShape(
            device_type=slowest_type([d.type for d in g]),
            tp=len(g),
            num_layers=n,
            has_embedding=i == 0,
            has_head=i == last,
            tp_link=cluster.slowest_link(g),
        )
        for i, (g, n) in enumerate(zip(groups, layers, strict=True))
    ]


# ----------------------------------------------------------------------------- the estimate


def estimate(
    model: ModelSpec,
    cluster: Cluster,
    calibration: Calibration,
    tp: int | None = None,
    workload: Workload = Workload(),
) -> Estimate:
    groups = stage_groups(model, cluster.devices, tp)
    shapes = _shapes(model, cluster, groups)
    w = workload
    prefill = [prefill_time(model, s, calibration, 1, w.prompt_len) for s in shapes]
    decode = [decode_step_time(model, s, calibration, w.decode_batch, w.context_len) for s in shapes]
    kv_tokens = w.decode_batch * (w.context_len + 1)
    rows, first_layer = [], 0
    for i, (group, shape) in enumerate(zip(groups, shapes, strict=True)):
        for d in group:
            memory = stage_memory(model, shape, d.type, calibration)
            rows.append(DeviceEstimate(d, i, first_layer, shape, memory, kv_tokens, prefill[i], decode[i]))
        first_layer += shape.num_layers
    links = [cluster.link(a[0], b[0]) for a, b in zip(groups, groups[1:], strict=False)]
    return Estimate(
        model=model,
        cluster=cluster,
        workload=w,
        devices=rows,
        prefill_s=pipeline_time(model, shapes, prefill, links, w.prompt_len, calibration),
        decode_step_s=pipeline_time(model, shapes, decode, links, w.decode_batch, calibration),
        calibration_source=calibration.source,
    )
