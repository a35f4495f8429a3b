"""What the disaggregated planner is compared with (docs/planner-disaggregated.md, "Baselines").

- DistServe-style, for homogeneous clusters: every prefill instance has one symmetric layout (TP x PP,
  equal layers) and every decode instance another; the best prefill:decode instance split by max-flow
  over every pair of shapes, devices handed out in cluster order (prefill first).
- Colocated HexGen on the same cluster: `hexgen.plan_colocated` (its plan's requests/s).
- Ablations of HexGen-2 itself: without phase 1 (random groups and roles, then max-flow and
  refinement), without phase 3 (phases 1 and 2 only), and random groups + max-flow alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from hexserve.planner.disagg_eval import Evaluation, Evaluator, canonical
from hexserve.planner.hexgen2 import search_disaggregated
from hexserve.planner.phase import PhaseFit
from hexserve.planner.split import equal_split
from hexserve.planner.stagecost import CostTable

ABLATIONS = {  # name: (phase 1, phase 3)
    "hexgen2": (True, True),
    "no phase 1": (False, True),
    "no phase 3": (True, False),
    "random + max-flow": (False, False),
}


@dataclass(frozen=True)
class Shape:
    tp: int
    pp: int

    @property
    def size(self) -> int:
        return self.tp * self.pp


def _shapes(table: CostTable) -> list[Shape]:
    n = len(table.cluster.devices)
    return [Shape(t, p) for t in table.model.valid_tp_degrees(n) for p in range(1, n // t + 1)
            if p <= table.model.num_layers]


def _symmetric_fit(evaluator: Evaluator, devices: tuple, shape: Shape, phase: str) -> PhaseFit | None:
    stages = tuple(tuple(devices[i : i + shape.tp]) for i in range(0, shape.size, shape.tp))
    layers = tuple(equal_split(shape.pp, evaluator.table.model.num_layers))
    return evaluator.scorer.score_stages(stages, phase, layers)


def distserve(table: CostTable, evaluator: Evaluator | None = None) -> Evaluation | None:
    """The best symmetric prefill:decode split (None when no shape fits both phases)."""
    evaluator = evaluator or Evaluator(table)
    devices = table.cluster.devices
    n, best = len(devices), None
    shapes = _shapes(table)
    fits = {(s, ph): _symmetric_fit(evaluator, devices[: s.size], s, ph) for s in shapes for ph in ("prefill",
                                                                                                     "decode")}
    for sp in [s for s in shapes if fits[(s, "prefill")]]:
        for sd in [s for s in shapes if fits[(s, "decode")]]:
            for n_p in range(1, (n - sd.size) // sp.size + 1):
                n_d = (n - n_p * sp.size) // sd.size
                groups, roles, shape_of = [], [], []
                at = 0
                for count, shape, role in ((n_p, sp, "prefill"), (n_d, sd, "decode")):
                    for _ in range(count):
                        groups.append(tuple(devices[at : at + shape.size]))
                        roles.append(role)
                        shape_of.append(shape)
                        at += shape.size
                a = canonical(groups, roles)
                by_first = {g[0].index: (g, s) for g, s in zip(groups, shape_of, strict=True)}
                layouts = tuple(
                    _symmetric_fit(evaluator, g, by_first[g[0].index][1], r)
                    for g, r in zip(a.groups, a.roles, strict=True)
                )
                e = evaluator.evaluate_with(a, layouts)
                if best is None or e.value > best.value:
                    best = e
    return best


def ablation(table: CostTable, name: str, seed: int = 0, time_budget_s: float = 25.0) -> float:
    """Requests/s of one variant of the planner (0 when it finds nothing)."""
    phase1, phase3 = ABLATIONS[name]
    result = search_disaggregated(table, seed, time_budget_s, phase1=phase1, phase3=phase3)
    return result.requests_per_s if result else 0.0
