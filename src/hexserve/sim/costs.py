"""Every time the simulator uses, from the planner's cost model, per replica and per stage.

A plan's stages become `StageShape`s through the planner's own `CostTable.shape` and
`CostTable.boundary_link` (the same mapping the planner priced), so the simulator and the planner can
only disagree about batching and queueing, never about what one step of one stage costs. A stage's
time for a batch is its compute and TP all-reduces (`prefill_time` / `decode_step_time`), its send of
the hidden states to the next stage (`pp_send_time`), and on the first stage the engine's fixed host
time per step (calibration `step_s`), exactly as the planner adds them.

Prefill times are exact (keyed by batch size and the batch's mean prompt length). Decode times are
keyed by batch size and the batch's mean context rounded to a KV block (16 tokens): a decode step's
only context term is attention's KV read, linear in context, so the rounding moves a step by far less
than 1% while keeping the number of distinct cost-model calls small (the 19k-request trace needs a few
thousand).
"""

from __future__ import annotations

from hexserve.costmodel.latency import decode_step_time, pp_send_time, prefill_time
from hexserve.costmodel.memory import stage_memory
from hexserve.costmodel.stage import StageShape
from hexserve.planner.plan import Replica
from hexserve.planner.stagecost import CostTable
from hexserve.sim.kv import BLOCK_TOKENS
from hexserve.specs.cluster import Device
from hexserve.specs.links import Link


class ReplicaCosts:
    def __init__(self, table: CostTable, replica: Replica):
        self.table = table
        self.stages: list[tuple[Device, ...]] = [tuple(table.cluster.devices[d] for d in s.devices)
                                                  for s in replica.stages]
        last = len(self.stages) - 1
        self.shapes: list[StageShape] = [
            table.shape(devs, s.num_layers, j == 0, j == last)
            for j, (devs, s) in enumerate(zip(self.stages, replica.stages, strict=True))
        ]
        self.sends: list[Link | None] = [
            table.boundary_link(devs, self.stages[j + 1] if j < last else None) for j, devs in enumerate(self.stages)
        ]
        self.layers = tuple(s.num_layers for s in replica.stages)
        self._prefill: dict[tuple[int, int], tuple[float, ...]] = {}
        self._decode: dict[tuple[int, int], tuple[float, ...]] = {}

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def kv_tokens(self) -> int:
        """KV tokens the replica can hold: the smallest KV pool of any of its ranks."""
        cal, m = self.table.calibration, self.table.model
        return min(
            stage_memory(m, shape, d.type, cal).max_kv_tokens
            for devs, shape in zip(self.stages, self.shapes, strict=True)
            for d in devs
        )

    def _extra(self, j: int, tokens: int) -> float:
        """The stage's send of `tokens` hidden states to the next stage, and the host time on the first."""
        shape, link = self.shapes[j], self.sends[j]
        eff = self.table.calibration.for_type(shape.device_type.name)
        host = eff.step_s if shape.has_embedding else 0.0
        return host + (pp_send_time(self.table.model, tokens, link, eff) if link is not None else 0.0)

    def prefill(self, batch: int, prompt_len: int) -> tuple[float, ...]:
        """Per stage: seconds to prefill `batch` prompts of `prompt_len` tokens."""
        key = (batch, prompt_len)
        times = self._prefill.get(key)
        if times is None:
            m, cal = self.table.model, self.table.calibration
            times = tuple(
                prefill_time(m, shape, cal, batch, prompt_len) + self._extra(j, batch * prompt_len)
                for j, shape in enumerate(self.shapes)
            )
            self._prefill[key] = times
        return times

    def decode(self, batch: int, context_len: float) -> tuple[float, ...]:
        """Per stage: seconds of one decode step of `batch` sequences of mean context `context_len`."""
        rounded = max(BLOCK_TOKENS, int(round(context_len / BLOCK_TOKENS)) * BLOCK_TOKENS)
        key = (batch, rounded)
        times = self._decode.get(key)
        if times is None:
            m, cal = self.table.model, self.table.calibration
            times = tuple(
                decode_step_time(m, shape, cal, batch, rounded) + self._extra(j, batch)
                for j, shape in enumerate(self.shapes)
            )
            self._decode[key] = times
        return times
