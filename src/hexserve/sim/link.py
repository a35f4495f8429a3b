"""The link joining a prefill replica to a decode replica: concurrent KV transfers share its bandwidth.

Processor sharing: n transfers in flight each progress at 1/n of the link's rate, so a burst of
handoffs slows every one of them, as on a real NIC. Each transfer's work is its prompt's KV time at
full bandwidth on the busiest device of the handoff (`planner.kv_link.handoff_seconds`, the planner's
own re-sharding model); the fixed part (the send call and the link latency) is a delay that does not
occupy the bandwidth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hexserve.sim.events import EventLoop


@dataclass
class SharedLink:
    loop: EventLoop
    seconds_per_token: float  # bandwidth term of one prompt token's KV at full rate
    fixed_s: float  # per transfer: send call and link latency
    active: dict[int, list] = field(default_factory=dict)  # id -> [remaining work s, callback]
    last: float = 0.0
    version: int = 0
    transfers: int = 0
    busy_s: float = 0.0
    peak_concurrent: int = 0

    def start(self, key: int, tokens: int, done: Callable[[], None]) -> None:
        self._advance()
        self.active[key] = [tokens * self.seconds_per_token, done]
        self.transfers += 1
        self.peak_concurrent = max(self.peak_concurrent, len(self.active))
        self._reschedule()

    def _advance(self) -> None:
        now, n = self.loop.now, len(self.active)
        if n:
            share = (now - self.last) / n
            for entry in self.active.values():
                entry[0] -= share
            self.busy_s += now - self.last
        self.last = now

    def _reschedule(self) -> None:
        self.version += 1
        if self.active:
            least = min(entry[0] for entry in self.active.values())
            self.loop.at(self.loop.now + max(least, 0.0) * len(self.active), self._fire, self.version)

    def _fire(self, version: int) -> None:
        if version != self.version:  # superseded: a transfer started or ended since this was scheduled
            return
        self._advance()
        finished = [k for k, entry in self.active.items() if entry[0] <= 1e-9]
        for k in finished:
            _, done = self.active.pop(k)
            self.loop.at(self.loop.now + self.fixed_s, done)
        self._reschedule()
