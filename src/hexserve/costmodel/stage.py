"""What the cost model needs to know of one pipeline stage: its TP group and its slice of the model."""

from __future__ import annotations

from dataclasses import dataclass

from hexserve.specs.gpus import DeviceType
from hexserve.specs.links import Link


@dataclass(frozen=True)
class StageShape:
    device_type: DeviceType  # the slowest of the group: a TP group moves at its slowest member's pace
    tp: int
    num_layers: int
    has_embedding: bool  # the first stage of a pipeline
    has_head: bool  # the last stage: final norm, LM head, sampling
    tp_link: Link | None = None  # the slowest link inside the TP group (None when tp == 1)


def slowest_type(types: list[DeviceType]) -> DeviceType:
    """One type with the lowest compute, bandwidth and memory of a group: the pace and the limit of a
    TP group whose ranks are of different types."""
    if len({t.name for t in types}) == 1:
        return types[0]
    return DeviceType(
        name="+".join(sorted({t.name for t in types})),
        memory_gib=min(t.memory_gib for t in types),
        mem_bandwidth_gbps=min(t.mem_bandwidth_gbps for t in types),
        tflops=min(t.tflops for t in types),
        price_per_hour=sum(t.price_per_hour for t in types) / len(types),
        is_cpu=any(t.is_cpu for t in types),
    )
