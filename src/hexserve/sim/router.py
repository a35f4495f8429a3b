"""Which replica takes a request: the plan's shares, or the least loaded.

`shares` is smooth weighted round-robin (nginx's): deterministic, and after n requests every replica
has had within one request of share x n, so the plan's split is followed exactly without the noise
of random draws. `least-loaded` sends each request where the fewest sequences are outstanding per
unit of the replica's predicted capacity (a bigger replica takes proportionally more).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ROUTERS = ("shares", "least-loaded")


@dataclass
class SharesRouter:
    weights: Sequence[float]
    current: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.current = [0.0] * len(self.weights)

    def pick(self, fits: Callable[[int], bool] = lambda i: True) -> int | None:
        total = sum(w for i, w in enumerate(self.weights) if fits(i))
        if total <= 0:
            return None
        for i, w in enumerate(self.weights):
            if fits(i):
                self.current[i] += w
        best = max((i for i in range(len(self.weights)) if fits(i)), key=lambda i: self.current[i])
        self.current[best] -= total
        return best


@dataclass
class LeastLoadedRouter:
    load: Callable[[int], float]  # outstanding sequences of a replica
    capacity: Sequence[float]  # its predicted requests/s (a relative size)

    def pick(self, fits: Callable[[int], bool] = lambda i: True) -> int | None:
        candidates = [i for i in range(len(self.capacity)) if fits(i) and self.capacity[i] > 0]
        if not candidates:
            return None
        return min(candidates, key=lambda i: ((self.load(i) + 1) / self.capacity[i], i))
