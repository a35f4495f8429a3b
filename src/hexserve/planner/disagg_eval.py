"""Score one disaggregated assignment (device groups, each a prefill or a decode replica) by max-flow.

Every group is laid out for its phase (`phase_layout.PhaseScorer`), every prefill/decode pair gets the
KV-transfer capacity of its link (`kv_link.kv_capacity`), and `maxflow.solve` gives the request rate.
Layouts, link capacities and whole assignments are cached: the refinement re-scores many assignments
that differ in one or two groups.
"""

from __future__ import annotations

from dataclasses import dataclass

from hexserve.planner.kv_link import kv_capacity
from hexserve.planner.maxflow import FlowResult, solve
from hexserve.planner.phase import PhaseFit
from hexserve.planner.phase_layout import PhaseScorer
from hexserve.planner.stagecost import CostTable
from hexserve.specs.cluster import Device

Group = tuple[Device, ...]


def canonical(groups: list[Group] | tuple[Group, ...], roles: list[str] | tuple[str, ...]) -> Assignment:
    """Groups sorted by their first device, devices by index: one spelling per assignment."""
    pairs = sorted(((tuple(sorted(g, key=lambda d: d.index)), r) for g, r in zip(groups, roles, strict=True) if g),
                   key=lambda p: p[0][0].index)
    return Assignment(tuple(g for g, _ in pairs), tuple(r for _, r in pairs))


@dataclass(frozen=True)
class Assignment:
    groups: tuple[Group, ...]
    roles: tuple[str, ...]  # "prefill" | "decode", one per group

    def of_role(self, role: str) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r == role]

    @property
    def used(self) -> set[Device]:
        return {d for g in self.groups for d in g}

    def key(self) -> frozenset:
        return frozenset((frozenset(d.index for d in g), r) for g, r in zip(self.groups, self.roles, strict=True))


@dataclass(frozen=True)
class Evaluation:
    assignment: Assignment
    prefill: tuple[int, ...]  # group indices of the prefill replicas, in flow-network order
    decode: tuple[int, ...]
    fits: tuple[PhaseFit | None, ...]  # per group, for its role
    links: dict[tuple[int, int], float]  # (prefill position, decode position) -> requests/s of KV
    flow: FlowResult

    @property
    def value(self) -> float:
        return self.flow.value


class Evaluator:
    def __init__(self, table: CostTable):
        self.table = table
        self.scorer = PhaseScorer(table)
        self._links: dict[tuple, float] = {}
        self._done: dict[frozenset, Evaluation] = {}
        self.flows = 0

    def rate(self, group: Group, role: str) -> float:
        return self.scorer.rate(group, role)

    def _link(self, p: PhaseFit, d: PhaseFit) -> float:
        key = (p.stages, p.layers, d.stages, d.layers)
        if key not in self._links:
            self._links[key] = kv_capacity(self.table, p, d)
        return self._links[key]

    def evaluate(self, a: Assignment) -> Evaluation:
        key = a.key()
        if key not in self._done:
            self._done[key] = self._evaluate(a)
        return self._done[key]

    def _evaluate(self, a: Assignment) -> Evaluation:
        return self.evaluate_with(a, tuple(self.scorer.fit(g, r) for g, r in zip(a.groups, a.roles, strict=True)))

    def evaluate_with(self, a: Assignment, fits: tuple[PhaseFit | None, ...]) -> Evaluation:
        """The flow of an assignment whose layouts are given (baselines with fixed layouts), uncached."""
        prefill, decode = tuple(a.of_role("prefill")), tuple(a.of_role("decode"))
        links = {
            (i, k): self._link(fits[p], fits[d])
            for i, p in enumerate(prefill)
            for k, d in enumerate(decode)
            if fits[p] is not None and fits[d] is not None
        }
        caps_p = [fits[p].requests_per_s if fits[p] else 0.0 for p in prefill]
        caps_d = [fits[d].requests_per_s if fits[d] else 0.0 for d in decode]
        self.flows += 1
        return Evaluation(a, prefill, decode, fits, links, solve(caps_p, caps_d, links))
