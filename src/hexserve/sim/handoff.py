"""The KV links of a disaggregated plan: one `SharedLink` per prefill -> decode route.

A transfer's bandwidth term is the planner's own re-sharding model (`planner.kv_link.handoff_seconds`:
every decode rank receives its layers and KV heads from the prefill ranks that hold them; the busiest
device bounds the handoff). Bytes are linear in the prompt, so it is priced once per route for a
reference prompt and scaled per request.
"""

from __future__ import annotations

from hexserve.planner.kv_link import handoff_seconds
from hexserve.planner.phase import PhaseFit
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import Workload
from hexserve.sim.costs import ReplicaCosts
from hexserve.sim.events import EventLoop
from hexserve.sim.link import SharedLink

REFERENCE_PROMPT = 1024  # tokens: any length gives the same per-token time


def _layout(costs: ReplicaCosts) -> PhaseFit:
    # kv_link reads only the stages and layer counts of a layout
    return PhaseFit(tuple(costs.stages), costs.layers, None)  # type: ignore[arg-type]


def route_link(table: CostTable, loop: EventLoop, prefill: ReplicaCosts, decode: ReplicaCosts) -> SharedLink:
    reference = CostTable(table.model, table.cluster, table.calibration, Workload(REFERENCE_PROMPT, 1))
    seconds = handoff_seconds(reference, _layout(prefill), _layout(decode))
    a, b = prefill.stages[0][0], decode.stages[0][0]
    link = table.cluster.link(a, b)
    eff = table.calibration.for_type(a.type.name)
    return SharedLink(loop, seconds / REFERENCE_PROMPT, eff.p2p_s + link.latency)
