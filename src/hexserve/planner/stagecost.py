"""The cost model's numbers for one candidate stage, as lines in its layer count, cached.

The planner scores thousands of candidate layouts; the cost model is linear in a stage's layer count,
so each stage (its device types, TP link, position in the pipeline, micro-batch size) is priced once at
0 and 1 layers and every split of layers is then two multiplications away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hexserve.costmodel.calibration import Calibration
from hexserve.costmodel.latency import decode_step_time, pp_send_time, prefill_time
from hexserve.costmodel.memory import MemoryUse, stage_memory
from hexserve.costmodel.stage import StageShape, slowest_type
from hexserve.planner.workload import Workload
from hexserve.specs.cluster import Cluster, Device
from hexserve.specs.links import Link
from hexserve.specs.model import ModelSpec

Stage = tuple[Device, ...]  # the devices of one TP group, in rank order


@dataclass(frozen=True)
class Line:
    """fixed + per_layer * layers."""

    fixed: float
    per_layer: float

    def at(self, layers: int) -> float:
        return self.fixed + self.per_layer * layers


@dataclass(frozen=True)
class StageCost:
    prefill: Line  # one prompt through the stage and its send to the next stage
    decode: Line  # one decode step of a micro-batch and its send to the next stage


class CostTable:
    """Stage costs and memory caps of one model, cluster, calibration and workload, cached."""

    def __init__(self, model: ModelSpec, cluster: Cluster, calibration: Calibration, workload: Workload):
        self.model, self.cluster, self.calibration, self.workload = model, cluster, calibration, workload
        self._links: dict[tuple[int, ...], Link | None] = {}
        self._costs: dict[tuple, StageCost] = {}
        self._caps: dict[tuple, int] = {}
        self._stage_keys: dict[tuple[int, ...], tuple] = {}
        self.fits: dict[tuple, object] = {}  # throughput.fit_throughput's memo, by order_key

    # ------------------------------------------------------------------ shapes

    def tp_link(self, stage: Stage) -> Link | None:
        key = tuple(d.index for d in stage)
        if key not in self._links:
            self._links[key] = self.cluster.slowest_link(stage)
        return self._links[key]

    def boundary_link(self, stage: Stage, following: Stage | None) -> Link | None:
        """The link a stage sends its hidden states over: between the first ranks of the two stages."""
        if following is None:
            return None
        a, b = stage[0], following[0]
        return None if a.index == b.index else self.cluster.link(a, b)

    def shape(self, stage: Stage, layers: int, first: bool, last: bool) -> StageShape:
        return StageShape(slowest_type([d.type for d in stage]), len(stage), layers, first, last, self.tp_link(stage))

    def _key(self, stage: Stage) -> tuple:
        # Devices of the same types over the same TP link cost the same: identical nodes share entries.
        ids = tuple(d.index for d in stage)
        if ids not in self._stage_keys:
            self._stage_keys[ids] = tuple(sorted(d.type.name for d in stage)), self.tp_link(stage)
        return self._stage_keys[ids]

    def order_key(self, stages: tuple[Stage, ...]) -> tuple:
        """All that the time and memory of stages in this order depend on: each stage's types and TP link
        and the link it sends over. Equal keys cost the same on any devices."""
        last = len(stages) - 1
        return tuple(
            (self._key(s), self.boundary_link(s, stages[j + 1] if j < last else None)) for j, s in enumerate(stages)
        )

    # ------------------------------------------------------------------ time

    def cost(self, stage: Stage, first: bool, last: bool, send: Link | None, batch: int) -> StageCost:
        key = (self._key(stage), first, last, send, batch)
        if key not in self._costs:
            self._costs[key] = self._price(stage, first, last, send, batch)
        return self._costs[key]

    def _price(self, stage: Stage, first: bool, last: bool, send: Link | None, batch: int) -> StageCost:
        m, w, cal = self.model, self.workload, self.calibration
        eff = cal.for_type(self.shape(stage, 0, first, last).device_type.name)
        host = eff.step_s if first else 0.0  # the leader's scheduling and sampling, once per engine step
        send_pre = pp_send_time(m, w.prompt_len, send, eff) if send else 0.0
        send_dec = pp_send_time(m, batch, send, eff) if send else 0.0
        pre = [prefill_time(m, self.shape(stage, n, first, last), cal, 1, w.prompt_len) for n in (0, 1)]
        dec = [decode_step_time(m, self.shape(stage, n, first, last), cal, batch, w.mean_context) for n in (0, 1)]
        return StageCost(
            prefill=Line(pre[0] + send_pre + host, pre[1] - pre[0]),
            decode=Line(dec[0] + send_dec + host, dec[1] - dec[0]),
        )

    # ------------------------------------------------------------------ memory

    def memory(self, stage: Stage, layers: int, first: bool, last: bool) -> list[MemoryUse]:
        """Memory of each rank of the stage."""
        shape = self.shape(stage, layers, first, last)
        return [stage_memory(self.model, shape, d.type, self.calibration) for d in stage]

    def layer_cap(self, stage: Stage, first: bool, last: bool, kv_tokens: int) -> int:
        """Most layers every rank of the stage can hold with `kv_tokens` tokens of KV cache."""
        key = (self._key(stage), first, last, kv_tokens)
        if key not in self._caps:
            self._caps[key] = self._cap(stage, first, last, kv_tokens)
        return self._caps[key]

    def _cap(self, stage: Stage, first: bool, last: bool, kv_tokens: int) -> int:
        cap = self.model.num_layers
        for zero, one in zip(self.memory(stage, 0, first, last), self.memory(stage, 1, first, last), strict=True):
            per_layer = (one.static - zero.static) + kv_tokens * one.kv_per_token
            room = zero.usable - zero.static - 4096  # slack for the cost model's byte rounding
            cap = min(cap, math.floor(room / per_layer) if room > 0 else 0)
        return max(cap, 0)
