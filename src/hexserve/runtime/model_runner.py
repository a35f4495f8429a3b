"""Runs the model for one scheduled batch: builds the flat token batch and its attention metadata,
computes logits only for the rows that pick a next token, and samples them."""

from __future__ import annotations

import torch

from hexserve.runtime.config import ModelConfig
from hexserve.runtime.device import default_dtype
from hexserve.runtime.kv_cache import BlockManager, CacheShape, allocate_cache
from hexserve.runtime.layers.attention import AttentionMetadata, PagedAttention, PrefillSpan
from hexserve.runtime.layers.sampler import SamplingBatch, sample
from hexserve.runtime.loader import load_weights
from hexserve.runtime.models import model_class
from hexserve.runtime.scheduler import Batch


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
        decodes = [e for e in batch.entries if e.is_decode]
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
        meta = AttentionMetadata(self._tensor(slots), len(decodes), prefills=prefills)
        if decodes:
            meta.decode_slots, meta.decode_mask = self._decode_context(decodes, blocks.block_size)
        return self._tensor(ids), self._tensor(positions), meta, rows

    def _decode_context(self, decodes, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Slots of every decode's whole context, padded to the longest, and the mask of real keys."""
        lengths = [len(e.seq) for e in decodes]
        width = -(-max(lengths) // block_size)
        # Block 0 pads the shorter tables; the mask hides whatever it holds.
        tables = self._tensor([e.seq.block_table + [0] * (width - len(e.seq.block_table)) for e in decodes])
        offsets = torch.arange(block_size, device=self.device)
        slots = (tables.unsqueeze(-1) * block_size + offsets).flatten(1)[:, : max(lengths)]
        mask = torch.arange(max(lengths), device=self.device) < self._tensor(lengths).unsqueeze(1)
        return slots.flatten(), mask.view(len(decodes), 1, 1, -1)

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
