"""Moving a request's KV cache from a prefill replica to a decode replica, re-sharded between layouts.

The pieces are the planner's (`planner.kv_link.kv_slices`: every layer x KV head once, from a prefill
rank that holds it to a decode rank that needs it), so the bytes moved are the bytes the cost model
prices. The leader turns them into one `KvTransfer` per request (global ranks, cache slots on both
sides) and attaches it to the next step of both replicas. A worker runs its part before its step's
forward pass: a prefill rank gathers its pieces from the request's slots and sends them without waiting
(the leader has already freed those blocks: the gather runs before any later step can reuse them); a
decode rank receives its pieces into the slots its leader allocated, then forwards a replicated KV head
(TP wider than the KV heads) to the other ranks of its stage that hold it. Point-to-point over the
plan's torch.distributed world: gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from hexserve.planner.kv_link import kv_heads, kv_slices, rank_owners


@dataclass(frozen=True)
class KvPiece:
    src: int  # global rank that sends
    dst: int  # global rank that receives
    layers: tuple[int, int]  # [first, end), global layer indices
    heads: tuple[int, int]  # [first, end), global KV head indices
    copy: bool = False  # a decode rank forwarding a replicated head to a peer of its stage


@dataclass
class KvTransfer:
    seq_id: int
    num_tokens: int  # the prompt's tokens whose K/V exist
    src_slots: list[int]  # on the prefill replica
    dst_slots: list[int]  # on the decode replica
    pieces: list[KvPiece]


@dataclass
class TransferStats:
    """What one worker moved: pieces and bytes sent and received, seconds spent receiving."""

    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0


def route_pieces(prefill_stages: list[tuple[int, ...]], decode_stages: list[tuple[int, ...]],
                 layers: tuple[list[int], list[int]], num_kv_heads: int) -> list[KvPiece]:
    """Every piece of a request's KV from one replica to another: stages are the global ranks of each
    stage (TP order), layers the number of layers of each stage of the prefill and the decode replica."""
    p_layout = [(len(s), n) for s, n in zip(prefill_stages, layers[0], strict=True)]
    d_layout = [(len(s), n) for s, n in zip(decode_stages, layers[1], strict=True)]
    p_ranks = [r for s in prefill_stages for r in s]
    d_ranks = [r for s in decode_stages for r in s]
    pieces = [KvPiece(p_ranks[s.src], d_ranks[s.dst], s.layers, s.heads)
              for s in kv_slices(p_layout, d_layout, num_kv_heads)]
    # Replicated decode heads: kv_slices sends each to the first rank of its stage that holds it.
    first_holder: dict[tuple[int, int], int] = {}
    for rank, (stage, first, end, h0, h1) in zip(d_ranks, rank_owners(d_layout, num_kv_heads), strict=True):
        for head in range(h0, h1):
            if (stage, head) in first_holder:
                pieces.append(KvPiece(first_holder[(stage, head)], rank, (first, end), (head, head + 1), copy=True))
            else:
                first_holder[(stage, head)] = rank
    return pieces


def transfer_bytes(pieces: list[KvPiece], num_tokens: int, head_dim: int, dtype_bytes: int) -> int:
    """Bytes one request's KV puts on prefill -> decode links (forwarded copies stay inside a stage)."""
    return sum(2 * (p.layers[1] - p.layers[0]) * (p.heads[1] - p.heads[0]) * num_tokens * head_dim * dtype_bytes
               for p in pieces if not p.copy)


@dataclass
class KvMover:
    """One worker's side of transfers: its rank, which layers and KV heads its cache holds."""

    rank: int
    layers: tuple[int, int]
    tp_rank: int
    tp_size: int
    num_kv_heads: int
    cache: torch.Tensor  # (2, local layers, slots, local KV heads, head dim)
    in_flight: list = field(default_factory=list)  # (work handle, tensor) of sends not known complete
    stats: TransferStats = field(default_factory=TransferStats)
    failed: list[int] = field(default_factory=list)  # requests whose KV this rank could not receive

    def run(self, transfer: KvTransfer) -> None:
        """This rank's part of `transfer`, pieces in their order (receipts before the copies that forward
        them): every rank of both replicas walks the same list, so sends and receives pair up."""
        self._reap()
        for p in transfer.pieces:
            if p.src == self.rank:
                slots = transfer.dst_slots if p.copy else transfer.src_slots
                piece = self._index(p, slots)
                data = self.cache[piece].contiguous()
                try:
                    self.in_flight.append((dist.isend(data, p.dst), data))
                except RuntimeError:  # the receiver died: its leader moves the request
                    continue
                self.stats.bytes_sent += data.numel() * data.element_size()
            elif p.dst == self.rank:
                start = time.perf_counter()
                piece = self._index(p, transfer.dst_slots)
                buffer = torch.empty_like(self.cache[piece])
                try:
                    dist.recv(buffer, p.src)
                except RuntimeError:  # the sender died: this request starts again elsewhere, this worker lives
                    self.failed.append(transfer.seq_id)
                    continue
                self.cache[piece] = buffer
                self.stats.bytes_received += buffer.numel() * buffer.element_size()
                self.stats.seconds += time.perf_counter() - start

    def take_failed(self) -> list[int]:
        failed, self.failed = self.failed, []
        return failed

    def finish(self) -> None:
        """Wait for this rank's sends (before the process stops: a send's tensor must outlive it)."""
        for work, _ in self.in_flight:
            try:
                work.wait()
            except RuntimeError:
                pass  # the receiver is gone; its leader has moved the request elsewhere
        self.in_flight.clear()

    def _reap(self) -> None:
        self.in_flight = [(w, t) for w, t in self.in_flight if not _done(w)]

    def _index(self, p: KvPiece, slots: list[int]) -> tuple:
        first_head = kv_heads(self.tp_rank, self.tp_size, self.num_kv_heads)[0]
        layers = slice(p.layers[0] - self.layers[0], p.layers[1] - self.layers[0])
        heads = slice(p.heads[0] - first_head, p.heads[1] - first_head)
        return slice(None), layers, torch.tensor(slots, dtype=torch.long, device=self.cache.device), heads


def _done(work) -> bool:
    try:
        return work.is_completed()
    except RuntimeError:  # failed: nothing more will come of it
        return True
