"""The discrete-event core: a clock and a heap of callbacks ordered by time, then by insertion.

The insertion counter breaks ties so that events at the same instant run in the order they were
scheduled: the simulation is deterministic for a given input and seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class EventLoop:
    now: float = 0.0
    processed: int = 0
    _heap: list = field(default_factory=list)
    _counter: int = 0

    def at(self, time: float, action: Callable[..., None], *args: object) -> None:
        """Run action(*args) at `time` (never earlier than now: the clock only moves forward)."""
        self._counter += 1
        heapq.heappush(self._heap, (max(time, self.now), self._counter, action, args))

    def run(self, until: float = float("inf")) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            time, _, action, args = heapq.heappop(heap)
            self.now = time
            self.processed += 1
            action(*args)

    def __len__(self) -> int:
        return len(self._heap)
