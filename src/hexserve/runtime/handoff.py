"""The leader's side of disaggregation (HexGen-2): requests whose prompt a prefill replica has computed
wait here, in arrival order, until a decode replica has room for their whole context; then their KV
moves (`kv_transfer`) and the decode replica generates the rest.

A decode replica is picked among the prefill replica's routes in the plan (the max-flow's P->D shares):
with router "shares" the route furthest behind its share, with "least-loaded" the decode replica with
the fewest unfinished requests per share. It is admitted only when a micro-batch slot has the blocks
(never over-committed); otherwise the queue waits, its KV still held by the prefill replica.
"""

from __future__ import annotations

from collections import deque

from hexserve.planner.plan import Plan
from hexserve.runtime.kv_transfer import KvPiece, KvTransfer, route_pieces, transfer_bytes
from hexserve.runtime.replica import Replica
from hexserve.runtime.sequence import Sequence
from hexserve.specs.model import ModelSpec


class Handoffs:
    def __init__(self, plan: Plan, replicas: list[Replica], model: ModelSpec, dtype_bytes: int, router: str):
        self.replicas, self.router = replicas, router
        self.num_kv_heads, self.head_dim, self.dtype_bytes = model.num_kv_heads, model.head_dim, dtype_bytes
        self.routes = plan.routes()
        self.queue: deque[tuple[Replica, Sequence]] = deque()
        self.sent: dict[tuple[int, int], int] = {}  # (prefill, decode) -> requests handed over
        self._pieces: dict[tuple[int, int], list[KvPiece]] = {}

    def add(self, prefill: Replica, seq: Sequence) -> None:
        prefill.detach(seq)
        self.queue.append((prefill, seq))

    @property
    def waiting(self) -> int:
        """Prefilled requests waiting for a decode replica."""
        return len(self.queue)

    def place(self) -> None:
        """Hand over queued requests, oldest first, while their decode replica has room."""
        while self.queue:
            prefill, seq = self.queue[0]
            if seq.is_finished or seq.seq_id not in prefill.handing_off:  # aborted, or its replica failed
                self.queue.popleft()
                continue
            choices = self._choices(prefill.index)
            if not choices:
                self.queue.popleft()
                seq.error = f"no decode replica is serving the requests of prefill replica {prefill.index}"
                prefill.finish(seq, "error")
                continue
            # The route the plan's shares (or the load) pick; when it is full the request waits for it, as
            # the plan's flow says, and nothing overtakes the head of the queue.
            slot = choices[0].room_for(seq)
            if slot is None:
                return
            self.queue.popleft()
            self._move(prefill, choices[0], slot, seq)

    def _move(self, prefill: Replica, decode: Replica, slot, seq: Sequence) -> None:
        computed = seq.num_computed_tokens
        src_slots = prefill.release(seq)
        dst_slots = decode.adopt(seq, slot)
        transfer = KvTransfer(seq.seq_id, computed, src_slots, dst_slots, self.pieces(prefill, decode))
        prefill.transfers.append(transfer)
        decode.transfers.append(transfer)
        seq.replica = decode.index
        key = (prefill.index, decode.index)
        self.sent[key] = self.sent.get(key, 0) + 1

    def forget(self, failed: Replica) -> None:
        """Drop the handoffs not yet sent that involve a failed replica: its peers must not send to, or
        wait on, a dead worker. The requests themselves start again (LLM._fail)."""
        ranks = {w.spec.rank for w in failed.executor.workers}
        for r in self.replicas:
            r.transfers = [t for t in r.transfers if not any(p.src in ranks or p.dst in ranks for p in t.pieces)]

    def pieces(self, prefill: Replica, decode: Replica) -> list[KvPiece]:
        """The KV pieces of the route, from the two replicas' workers (computed once per route)."""
        key = (prefill.index, decode.index)
        if key not in self._pieces:
            p_stages, p_layers = _stages(prefill)
            d_stages, d_layers = _stages(decode)
            self._pieces[key] = route_pieces(p_stages, d_stages, (p_layers, d_layers), self.num_kv_heads)
        return self._pieces[key]

    def describe(self) -> list[str]:
        """One line per P->D route: its share and the KV it moves per prompt token (printed at start)."""
        lines = []
        for p, decodes in sorted(self.routes.items()):
            for d, share in decodes:
                pieces = self.pieces(self.replicas[p], self.replicas[d])
                per_token = transfer_bytes(pieces, 1, self.head_dim, self.dtype_bytes)
                lines.append(f"route: prefill replica {p} -> decode replica {d}: {share:.0%} of its requests, "
                             f"{len(pieces)} KV pieces, {per_token:,} bytes per prompt token")
        return lines

    def _choices(self, prefill: int) -> list[Replica]:
        """The live decode replicas of the prefill replica's routes, preferred first: the route furthest
        behind its share, or (least-loaded) the fewest unfinished requests per share."""
        live = [(self.replicas[d], share) for d, share in self.routes.get(prefill, []) if not self.replicas[d].error]
        if self.router == "least-loaded":
            order = sorted(live, key=lambda rs: (rs[0].num_unfinished / max(rs[1], 1e-9), rs[0].index))
        else:
            order = sorted(live, key=lambda rs: ((self.sent.get((prefill, rs[0].index), 0) + 1) / max(rs[1], 1e-9),
                                                 rs[0].index))
        return [replica for replica, _ in order]


def _stages(replica: Replica) -> tuple[list[tuple[int, ...]], list[int]]:
    """Global ranks of each stage of a replica's workers (TP order) and each stage's number of layers."""
    stages: dict[int, list] = {}
    for w in replica.executor.workers:
        stages.setdefault(w.spec.stage, []).append(w.spec)
    ordered = [sorted(specs, key=lambda s: s.tp_rank) for _, specs in sorted(stages.items())]
    return ([tuple(s.rank for s in specs) for specs in ordered],
            [specs[0].layers[1] - specs[0].layers[0] for specs in ordered])
