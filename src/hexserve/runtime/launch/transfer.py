"""Hidden states across a stage boundary, straight from stage i's ranks to stage i+1's.

After its last all-reduce every rank of stage i holds the whole hidden state. Rather than one leader
sending it all (and stage i+1 broadcasting it again, as HexGen did), sender c of the t_i senders sends
row chunk c to every receiver, and each receiver assembles the t_i chunks: every sender's link carries
1/t_i of the bytes, and no hop is added. Each (sender, receiver) pair has its own process group, built
at start, so transfers of different pairs never wait on each other.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from hexserve.runtime.launch.topology import WorkerSpec


class StageLink:
    def __init__(self, spec: WorkerSpec, groups: dict[tuple[int, ...], object]):
        self.spec, self.groups = spec, groups
        self.pending: list[tuple[object, torch.Tensor]] = []  # sends in flight and the tensors they read

    def send(self, hidden: torch.Tensor) -> None:
        """This rank's chunk of `hidden` to every rank of the next stage, without waiting."""
        self._reap()
        chunk = torch.tensor_split(hidden, self.spec.tp_size)[self.spec.tp_rank].contiguous()
        if chunk.shape[0] == 0:
            return
        for receiver in self.spec.next_ranks:
            work = dist.isend(chunk, dst=receiver, group=self.groups[(self.spec.rank, receiver)])
            self.pending.append((work, chunk))

    def receive(self, num_tokens: int, hidden_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The previous stage's hidden states, chunk by chunk from each of its ranks."""
        hidden = torch.empty(num_tokens, hidden_size, dtype=dtype, device=device)
        works = []
        chunks = torch.tensor_split(hidden, len(self.spec.prev_ranks))
        for sender, chunk in zip(self.spec.prev_ranks, chunks, strict=True):
            if chunk.shape[0]:
                works.append(dist.irecv(chunk, src=sender, group=self.groups[(sender, self.spec.rank)]))
        for work in works:
            work.wait()
        return hidden

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()

    def _reap(self) -> None:
        self.pending = [(w, t) for w, t in self.pending if not w.is_completed()]
