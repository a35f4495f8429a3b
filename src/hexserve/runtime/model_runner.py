"""Runs the model for one scheduled batch: builds the flat token batch and its attention metadata,
computes logits only for the rows that pick a next token, and samples them."""

from __future__ import annotations

import torch

from hexserve.runtime.config import ModelConfig
from hexserve.runtime.device import default_dtype
from hexserve.runtime.kv_cache import BlockManager, CacheShape, allocate_cache
from hexserve.runtime.layers.attention import AttentionMetadata, DecodeGroup, PagedAttention, PrefillSpan
from hexserve.runtime.layers.sampler import SamplingBatch, sample
from hexserve.runtime.loader import load_weights
from hexserve.runtime.models import model_class
from hexserve.runtime.scheduler import Batch

# Decodes attend in groups of similar context length. Padding a group to its longest context costs key
# rows; one more group costs a few more kernel calls per layer, worth about this many padded key rows
# (SmolLM2 on this CPU: ~0.15 us per key row per layer for gather + attention, ~0.1 ms per group).
GROUP_COST_KEYS = 512


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


class ModelRunner:
    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype):
        self.cfg, self.device, self.dtype = cfg, device, dtype
        with torch.device(device), default_dtype(dtype):
            self.model = model_class(cfg)(cfg)
        load_weights(self.model, cfg.path)
        self.model.eval()
        self.attention = [m for m in self.model.modules() if isinstance(m, PagedAttention)]
        self.cache: torch.Tensor | None = None

    def cache_shape(self, block_size: int) -> CacheShape:
        s = self.cfg.spec
        return CacheShape(s.num_layers, s.num_kv_heads, s.head_dim, block_size, self.dtype)

    def allocate_cache(self, shape: CacheShape, num_blocks: int) -> None:
        self.cache = allocate_cache(shape, num_blocks, self.device)
        for i, attn in enumerate(self.attention):
            attn.k_cache, attn.v_cache = self.cache[0, i], self.cache[1, i]

    # ------------------------------------------------------------------------------ one step

    @torch.inference_mode()
    def run(self, batch: Batch, blocks: BlockManager) -> list[tuple[int, float]]:
        """(token, logprob) for each entry of `batch` that reaches its sequence's last token, in order."""
        input_ids, positions, meta, rows = self._prepare(batch, blocks)
        hidden = self.model(input_ids, positions, meta)
        wanted = [e for e in batch.entries if e.samples]
        if not wanted:
            return []
        logits = self.model.compute_logits(hidden[torch.tensor(rows, device=self.device)])
        seqs = [e.seq for e in wanted]
        params = SamplingBatch(
            temperatures=[s.params.temperature for s in seqs],
            top_ks=[s.params.top_k for s in seqs],
            top_ps=[s.params.top_p for s in seqs],
            generators=[s.generator for s in seqs],
        )
        return list(zip(*sample(logits, params), strict=True))

    def _prepare(self, batch: Batch, blocks: BlockManager):
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        rows: list[int] = []  # rows of the hidden states whose logits are needed
        decodes = sorted((e for e in batch.entries if e.is_decode), key=lambda e: -len(e.seq))  # longest first
        batch.entries = decodes + [e for e in batch.entries if not e.is_decode]  # row order = result order
        prefills: list[PrefillSpan] = []
        for e in batch.entries:
            start, end = e.seq.num_computed_tokens, e.seq.num_computed_tokens + e.num_tokens
            row = len(ids)
            ids.extend(e.seq.token_ids[start:end])
            positions.extend(range(start, end))
            slots.extend(blocks.slots(e.seq, start, end))
            if e.samples:
                rows.append(row + e.num_tokens - 1)
            if not e.is_decode:
                context = self._tensor(blocks.slots(e.seq, 0, end)) if start else None
                prefills.append(PrefillSpan(row, row + e.num_tokens, start, context))
        meta = AttentionMetadata(self._tensor(slots), len(decodes), prefills=prefills, block_size=blocks.block_size)
        lengths = [len(e.seq) for e in decodes]
        for start, end in decode_groups(lengths, blocks.block_size):
            group = [e.seq.block_table for e in decodes[start:end]]
            meta.decode_groups.append(self._decode_group(start, group, lengths[start:end], blocks.block_size))
        return self._tensor(ids), self._tensor(positions), meta, rows

    def _decode_group(self, start: int, tables: list[list[int]], lengths: list[int], block_size: int) -> DecodeGroup:
        """The blocks of each decode's context, padded with block 0 to the longest, and the mask that
        hides the padding from attention (None when there is none)."""
        width = -(-max(lengths) // block_size)
        blocks: list[int] = []
        for table, n in zip(tables, lengths, strict=True):
            used = -(-n // block_size)
            blocks += table[:used] + [0] * (width - used)
        mask = None
        if min(lengths) < width * block_size:
            keys = torch.arange(width * block_size, device=self.device)
            hidden = keys >= self._tensor(lengths).unsqueeze(1)
            mask = torch.zeros(hidden.shape, dtype=self.dtype, device=self.device).masked_fill_(hidden, float("-inf"))
            mask = mask.view(len(lengths), 1, 1, -1)
        return DecodeGroup(start, start + len(lengths), self._tensor(blocks), mask)

    def _tensor(self, values: list) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.long, device=self.device)

    # ------------------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def prompt_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits at every position of one prompt, without touching the KV cache (tests, scoring)."""
        n = len(token_ids)
        meta = AttentionMetadata(slot_mapping=None, prefills=[PrefillSpan(0, n)])
        positions = torch.arange(n, device=self.device)
        hidden = self.model(self._tensor(token_ids), positions, meta)
        return self.model.compute_logits(hidden).float()
