"""One step's input as plain data: what a replica's leader sends to its workers each step.

The leader turns a scheduled `Batch` into a `StepInput` (token ids, positions, cache slots, the decode
groups' blocks, the prefill spans, which rows sample and how). Only lists of ints and floats: it pickles
small and means the same on every worker, whatever its device. Each worker turns it into tensors and
`AttentionMetadata` on its own device (`StepInput.tensors`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hexserve.runtime.kv_cache import BlockManager
from hexserve.runtime.kv_transfer import KvTransfer
from hexserve.runtime.layers.attention import AttentionMetadata, DecodeGroup, PrefillSpan
from hexserve.runtime.scheduler import Batch

# Decodes attend in groups of similar context length. Padding a group to its longest context costs key
# rows; one more group costs a few more kernel calls per layer, worth about this many padded key rows
# (SmolLM2 on this CPU: ~0.15 us per key row per layer for gather + attention, ~0.1 ms per group).
GROUP_COST_KEYS = 512


@dataclass(frozen=True)
class SampleSpec:
    """How one row picks its next token; `seed` starts the request's own generator (None: greedy)."""

    seq_id: int
    temperature: float
    top_k: int
    top_p: float
    seed: int | None
    position: int = 0  # output tokens the request already has: which draw of its seeded stream this is


@dataclass
class StepInput:
    step_id: int
    token_ids: list[int]
    positions: list[int]
    slots: list[int]  # cache slot of each token
    block_size: int
    decode_groups: list[tuple[int, int, list[int], list[int]]]  # (start, end, blocks, context lengths)
    prefills: list[tuple[int, int, int, list[int] | None]]  # (start, end, context_start, context slots)
    sample_rows: list[int]  # rows whose logits pick a next token, in result order
    samples: list[SampleSpec]
    transfers: list[KvTransfer] = field(default_factory=list)  # KV handoffs to run before the forward pass

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def tensors(self, device: torch.device, dtype: torch.dtype):
        """(input ids, positions, AttentionMetadata) on `device`."""
        meta = AttentionMetadata(_long(self.slots, device), block_size=self.block_size)
        for start, end, blocks, lengths in self.decode_groups:
            mask = _padding_mask(lengths, len(blocks) // len(lengths) * self.block_size, device, dtype)
            meta.decode_groups.append(DecodeGroup(start, end, _long(blocks, device), mask, _long(lengths, device)))
            meta.num_decodes = end
        for start, end, context_start, context in self.prefills:
            slots = _long(context, device) if context is not None else None
            meta.prefills.append(PrefillSpan(start, end, context_start, slots))
        return _long(self.token_ids, device), _long(self.positions, device), meta


def build_step(step_id: int, batch: Batch, blocks: BlockManager) -> StepInput:
    """The StepInput of `batch`. Reorders batch.entries to the row order (decodes longest first, then
    prompt spans), which is also the order of the sampled results."""
    decodes = sorted((e for e in batch.entries if e.is_decode), key=lambda e: -len(e.seq))
    batch.entries = decodes + [e for e in batch.entries if not e.is_decode]
    step = StepInput(step_id, [], [], [], blocks.block_size, [], [], [], [])
    for e in batch.entries:
        seq = e.seq
        start, end = seq.num_computed_tokens, seq.num_computed_tokens + e.num_tokens
        row = len(step.token_ids)
        step.token_ids.extend(seq.token_ids[start:end])
        step.positions.extend(range(start, end))
        step.slots.extend(blocks.slots(seq, start, end))
        if e.samples:
            step.sample_rows.append(row + e.num_tokens - 1)
            p = seq.params
            step.samples.append(SampleSpec(seq.seq_id, p.temperature, p.top_k, p.top_p, seq.seed,
                                           seq.num_output_tokens))
        if not e.is_decode:
            context = blocks.slots(seq, 0, end) if start else None
            step.prefills.append((row, row + e.num_tokens, start, context))
    lengths = [len(e.seq) for e in decodes]
    for start, end in decode_groups(lengths, blocks.block_size):
        group_blocks = _group_blocks(decodes[start:end], blocks.block_size)
        step.decode_groups.append((start, end, group_blocks, lengths[start:end]))
    return step


def decode_groups(lengths: list[int], block_size: int) -> list[tuple[int, int]]:
    """Cut decodes sorted longest first into runs [start, end) that minimise the padded key rows plus
    GROUP_COST_KEYS per run (a small dynamic programme over the cut points)."""
    widths = [-(-n // block_size) * block_size for n in lengths]
    best, cut = [0] + [float("inf")] * len(widths), [0] * (len(widths) + 1)
    for end in range(1, len(widths) + 1):
        for start in range(end):
            cost = best[start] + (end - start) * widths[start] + GROUP_COST_KEYS
            if cost < best[end]:
                best[end], cut[end] = cost, start
    runs, end = [], len(widths)
    while end:
        runs.append((cut[end], end))
        end = cut[end]
    return runs[::-1]


def _group_blocks(entries: list, block_size: int) -> list[int]:
    """The blocks of each decode's context, padded with block 0 to the group's longest, row by row."""
    width = -(-len(entries[0].seq) // block_size)
    blocks: list[int] = []
    for e in entries:
        used = -(-len(e.seq) // block_size)
        blocks += e.seq.block_table[:used] + [0] * (width - used)
    return blocks


def _padding_mask(lengths: list[int], width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor | None:
    """0 over each row's context and -inf over its padding, or None when nothing is padded."""
    if min(lengths) >= width:
        return None
    keys = torch.arange(width, device=device)
    hidden = keys >= _long(lengths, device).unsqueeze(1)
    mask = torch.zeros(hidden.shape, dtype=dtype, device=device).masked_fill_(hidden, float("-inf"))
    return mask.view(len(lengths), 1, 1, -1)


def _long(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)
