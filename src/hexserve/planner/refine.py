"""Phase 3 of HexGen-2: local moves guided by the flow's bottleneck, kept only when the flow grows.

The minimum cut of the current flow names what is saturated: prefill replicas, P->D links or decode
replicas. Groups on the cut are "receivers" (more capacity there raises the flow), the others "donors"
(they have slack). Candidate moves, bottleneck-first, shuffled within each kind by the seed:

1. flip a donor's role (prefill <-> decode), then the receivers';
2. give an unused device to a group;
3. move one device from one group to another (devices of one type on one node are interchangeable,
   so one move per (group, node and type, group)), donor to receiver first;
4. swap two devices of different kinds between two groups, donor and receiver first;
5. merge two groups (a receiver with another, either role);
6. split a group by the spectral bisection of phase 1 (both halves keep the role, or one flips).

A move is kept as soon as it raises the flow (first improvement), then the candidates are rebuilt from
the new cut. A descent ends when a whole candidate list brings no gain or after `patience` evaluations
without gain. Then an iterated local search: `kicks` times, take KICK_MOVES random moves from the best
assignment whatever they do, descend again, and keep the result only if its flow beats the best (flows
of max-of-min form have local optima that one move cannot leave: see docs/planner-disaggregated.md).
`max_evaluations` and the time budget end everything early; all stops but the time budget are
deterministic for a seed, and the log names the stop.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hexserve.planner.disagg_eval import Assignment, Evaluation, Evaluator, Group, canonical
from hexserve.planner.graph_partition import bisect

GAIN = 1e-9  # relative: a move must raise the flow by more than this
KICK_MOVES = 2  # random moves per kick of the iterated local search
KICKS = 10
OTHER = {"prefill": "decode", "decode": "prefill"}


@dataclass(frozen=True)
class Move:
    kind: str
    text: str
    before: float  # requests/s
    after: float


@dataclass(frozen=True)
class RefineLog:
    moves: tuple[Move, ...]
    evaluations: int
    stop: str  # why the refinement ended
    seconds: float


def _name(group: Group) -> str:
    nodes = sorted({d.node for d in group})
    return f"[{' '.join(str(d.index) for d in sorted(group, key=lambda d: d.index))}] on {'+'.join(nodes)}"


def _kinds(group: Group) -> dict[tuple[str, str], list]:
    kinds: dict[tuple[str, str], list] = {}
    for d in group:
        kinds.setdefault((d.node, d.type.name), []).append(d)
    return kinds


class Refiner:
    def __init__(self, evaluator: Evaluator, seed: int = 0, time_budget_s: float = 20.0, patience: int = 200,
                 max_evaluations: int = 600, kicks: int = KICKS):
        self.evaluator, self.table = evaluator, evaluator.table
        self.rng = np.random.default_rng(seed)
        self.seed, self.time_budget_s = seed, time_budget_s
        self.patience, self.max_evaluations, self.kicks = patience, max_evaluations, kicks
        self.began, self.evaluations = time.perf_counter(), 0
        self._bisected: dict[tuple[int, ...], tuple[Group, Group] | None] = {}

    # ------------------------------------------------------------------ candidates

    def _shuffled(self, items: list) -> list:
        return [items[k] for k in self.rng.permutation(len(items))] if items else []

    def _sides(self, e: Evaluation) -> tuple[list[int], list[int]]:
        """Receivers (groups on the minimum cut) and donors (the rest), as group indices."""
        sat_p, sat_links, sat_d = e.flow.saturated()
        on_cut = {e.prefill[i] for i in sat_p} | {e.decode[k] for k in sat_d}
        on_cut |= {e.prefill[i] for i, _ in sat_links} | {e.decode[k] for _, k in sat_links}
        groups = range(len(e.assignment.groups))
        return [g for g in groups if g in on_cut], [g for g in groups if g not in on_cut]

    def candidates(self, e: Evaluation) -> Iterator[tuple[str, str, Assignment]]:
        a = e.assignment
        groups, roles = list(a.groups), list(a.roles)
        receivers, donors = self._sides(e)

        def make(new_groups: list[Group], new_roles: list[str]) -> Assignment:
            return canonical(new_groups, new_roles)

        for g in self._shuffled(donors) + self._shuffled(receivers):
            flipped = roles[:g] + [OTHER[roles[g]]] + roles[g + 1 :]
            yield "flip", f"{roles[g]} group {_name(groups[g])} becomes {OTHER[roles[g]]}", make(groups, flipped)
        unused = [d for d in self.table.cluster.devices if d not in a.used]
        spare = {(d.node, d.type.name): d for d in reversed(unused)}
        pairs = [(k, g) for k in sorted(spare) for g in receivers + donors]
        for kind, g in self._shuffled(pairs):
            new = groups[:g] + [groups[g] + (spare[kind],)] + groups[g + 1 :]
            yield "adopt", f"unused {spare[kind].name} joins {roles[g]} group {_name(groups[g])}", make(new, roles)
        yield from self._moves(groups, roles, receivers, donors, make)
        yield from self._merges(groups, roles, receivers, make)
        yield from self._splits(groups, roles, receivers + donors, make)

    def _guided(self, pairs: list[tuple[int, int]], receivers: list[int], donors: list[int]) -> list:
        """Group pairs (from, to): donor to receiver first (the cut says that helps most), then the rest."""
        first = [(a, b) for a, b in pairs if a in donors and b in receivers]
        return self._shuffled(first) + self._shuffled([p for p in pairs if p not in set(first)])

    def _moves(self, groups, roles, receivers, donors, make) -> Iterator[tuple[str, str, Assignment]]:
        pairs = [(a, b) for a in range(len(groups)) for b in range(len(groups)) if a != b]
        ordered = self._guided(pairs, receivers, donors)
        for a, b in ordered:
            for kind in sorted(_kinds(groups[a])):
                d = _kinds(groups[a])[kind][-1]
                new = list(groups)
                new[a] = tuple(x for x in groups[a] if x != d)
                new[b] = groups[b] + (d,)
                text = f"{d.name} moves from {roles[a]} group {_name(groups[a])} to {roles[b]} group " \
                       f"{_name(groups[b])}"
                yield "move", text, make(new, roles)
        for a, b in ordered:
            if a > b and (b, a) in ordered:
                continue  # a swap is symmetric: once per pair
            for ka in sorted(_kinds(groups[a])):
                for kb in sorted(_kinds(groups[b])):
                    if ka == kb:
                        continue
                    da, db = _kinds(groups[a])[ka][-1], _kinds(groups[b])[kb][-1]
                    new = list(groups)
                    new[a] = tuple(x for x in groups[a] if x != da) + (db,)
                    new[b] = tuple(x for x in groups[b] if x != db) + (da,)
                    yield "swap", f"{da.name} and {db.name} swap groups", make(new, roles)

    def _merges(self, groups, roles, receivers, make) -> Iterator[tuple[str, str, Assignment]]:
        pairs = sorted({(min(a, b), max(a, b)) for a in receivers for b in range(len(groups)) if a != b})
        for a, b in self._shuffled(pairs):
            for role in sorted({roles[a], roles[b]}):
                new = [g for n, g in enumerate(groups) if n not in (a, b)] + [groups[a] + groups[b]]
                new_roles = [r for n, r in enumerate(roles) if n not in (a, b)] + [role]
                yield "merge", f"{_name(groups[a])} and {_name(groups[b])} merge into one {role} group", make(
                    new, new_roles)

    def _splits(self, groups, roles, order, make) -> Iterator[tuple[str, str, Assignment]]:
        for g in self._shuffled(order):
            halves = self._halves(groups[g])
            if halves is None:
                continue
            rest = [x for n, x in enumerate(groups) if n != g]
            rest_roles = [r for n, r in enumerate(roles) if n != g]
            for r1, r2 in ((roles[g], roles[g]), ("prefill", "decode"), ("decode", "prefill")):
                text = f"{roles[g]} group {_name(groups[g])} splits into {r1} {_name(halves[0])} and {r2} " \
                       f"{_name(halves[1])}"
                yield "split", text, make(rest + list(halves), rest_roles + [r1, r2])

    def _halves(self, group: Group) -> tuple[Group, Group] | None:
        key = tuple(d.index for d in group)
        if key not in self._bisected:
            self._bisected[key] = bisect(self.table, list(group), self.table.model.weights_bytes, self.seed)
        return self._bisected[key]

    # ------------------------------------------------------------------ the loop

    def _stop(self) -> str:
        if time.perf_counter() - self.began > self.time_budget_s:
            return f"time budget of {self.time_budget_s:g} s"
        if self.evaluations >= self.max_evaluations:
            return f"{self.max_evaluations} evaluations"
        return ""

    def descend(self, current: Evaluation) -> tuple[Evaluation, list[Move], str]:
        """First-improvement local search from `current` until no move gains (or a budget ends)."""
        moves, since_gain = [], 0
        while True:
            improved = False
            for kind, text, a in self.candidates(current):
                if stop := self._stop():
                    return current, moves, stop
                trial = self.evaluator.evaluate(a)
                self.evaluations += 1
                if trial.value > current.value * (1 + GAIN) + GAIN:
                    moves.append(Move(kind, text, current.value, trial.value))
                    current, improved, since_gain = trial, True, 0
                    break
                since_gain += 1
                if since_gain >= self.patience:
                    return current, moves, f"{self.patience} evaluations without gain"
            if not improved:
                return current, moves, "no move raises the flow"

    def kick(self, current: Evaluation) -> tuple[Evaluation, list[str]]:
        """KICK_MOVES random moves, taken whatever they do to the flow: a way out of a local optimum."""
        texts = []
        for _ in range(KICK_MOVES):
            options = list(self.candidates(current))
            if not options:
                break
            _, text, a = options[int(self.rng.integers(len(options)))]
            current = self.evaluator.evaluate(a)
            self.evaluations += 1
            texts.append(text)
        return current, texts

    def run(self, start: Evaluation) -> tuple[Evaluation, RefineLog]:
        """Descend from the start, then kick and descend again `kicks` times (iterated local search);
        the best assignment is replaced only by a higher flow, so the result never has less flow."""
        self.began, self.evaluations = time.perf_counter(), 0
        best, moves, stop = self.descend(start)
        for _ in range(self.kicks):
            if stop.startswith(("time", str(self.max_evaluations))):
                break
            kicked, texts = self.kick(best)
            local, _, stop = self.descend(kicked)
            if local.value > best.value * (1 + GAIN) + GAIN:
                text = f"random moves ({'; '.join(texts)}), then a descent"
                moves.append(Move("kick", text, best.value, local.value))
                best = local
        if not stop.startswith(("time", str(self.max_evaluations))):
            stop = f"{self.kicks} kicks done, the last descent ended as {stop}"
        return best, RefineLog(tuple(moves), self.evaluations, stop, time.perf_counter() - self.began)
