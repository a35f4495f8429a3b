"""Attention over the paged KV cache.

A batch is one flat run of tokens: first the single-token steps of sequences whose earlier tokens are
cached (decodes), then the spans of prompts being prefilled. Every token's key and value are written to
its cache slot first; then decodes attend in a few groups of similar context length, each to its
context's blocks: on the CPU through a kernel that reads them in place (paged_attention_cpu.c), elsewhere
gathered from the cache into a padded copy for scaled_dot_product_attention (grouping keeps the padding
small). Each prefill span attends causally to its own keys (or, when part of its prompt was computed in
an earlier step, to its cached context under an explicit causal mask).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hexserve.runtime.layers import paged_attention_cpu


@dataclass
class PrefillSpan:
    start: int  # first row of the span in the flat batch
    end: int
    context_start: int = 0  # position of the span's first token (> 0: earlier tokens are cached)
    context_slots: torch.Tensor | None = None  # cache slots of positions [0, context_start + length)


@dataclass
class DecodeGroup:
    """Decodes of similar context length, attending together: rows [start, end) of the batch read the
    blocks of their context, each padded to the group's widest, with a mask over the padding."""

    start: int
    end: int
    blocks: torch.Tensor  # ((end - start) * width,) block ids, row by row; pads reuse block 0
    mask: torch.Tensor | None  # (end - start, 1, 1, width * block_size) 0 or -inf; None: no padding
    lengths: torch.Tensor  # (end - start,) context length of each row


@dataclass
class AttentionMetadata:
    """Where each token of a step goes and what it attends to; built once per step by the runner."""

    slot_mapping: torch.Tensor | None  # (tokens,) cache slot of each token; None: no cache (scoring)
    num_decodes: int = 0
    decode_groups: list[DecodeGroup] = field(default_factory=list)  # the decodes' rows, longest first
    block_size: int = 0
    prefills: list[PrefillSpan] = field(default_factory=list)


class PagedAttention(nn.Module):
    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.group = num_heads // num_kv_heads
        # (slots, kv_heads, head_dim) views into the engine's cache, set by the model runner.
        self.k_cache = self.v_cache = torch.empty(0)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """q: (tokens, heads, head_dim); k, v: (tokens, kv_heads, head_dim) -> (tokens, heads * head_dim)."""
        if meta.slot_mapping is not None:
            self.k_cache.index_copy_(0, meta.slot_mapping, k)
            self.v_cache.index_copy_(0, meta.slot_mapping, v)
        out = q.new_empty(q.shape)
        for group in meta.decode_groups:
            out[group.start : group.end] = self._decode(q[group.start : group.end], group, meta.block_size)
        for span in meta.prefills:
            out[span.start : span.end] = self._prefill(q, k, v, span)
        return out.flatten(1)

    def _decode(self, q: torch.Tensor, group: DecodeGroup, block_size: int) -> torch.Tensor:
        n, hkv, d = q.shape[0], self.num_kv_heads, self.head_dim
        if paged_attention_cpu.available(self.k_cache):  # reads the blocks in place, no padded copy
            blocks = group.blocks.view(n, -1)
            return paged_attention_cpu.paged_decode_attention(q, self.k_cache, self.v_cache, blocks, group.lengths,
                                                              block_size)
        # Whole blocks are gathered (one copy of block_size * kv_heads * head_dim values per index).
        keys = self.k_cache.view(-1, block_size, hkv, d).index_select(0, group.blocks)
        values = self.v_cache.view(-1, block_size, hkv, d).index_select(0, group.blocks)
        keys, values = (t.view(n, -1, hkv, d).transpose(1, 2) for t in (keys, values))
        # The query heads sharing a KV head become that head's query rows (GQA without repeating K/V):
        # head h reads KV head h // group, as repeat_kv lays them out.
        grouped = q.view(n, hkv, self.group, d)
        o = F.scaled_dot_product_attention(grouped, keys, values, attn_mask=group.mask)
        return o.reshape(n, self.num_heads, d)

    def _prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, span: PrefillSpan) -> torch.Tensor:
        qs = q[span.start : span.end].transpose(0, 1).unsqueeze(0)
        gqa = self.group > 1
        if span.context_start == 0:
            ks = k[span.start : span.end].transpose(0, 1).unsqueeze(0)
            vs = v[span.start : span.end].transpose(0, 1).unsqueeze(0)
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, enable_gqa=gqa)
        else:
            ks = self.k_cache.index_select(0, span.context_slots).transpose(0, 1).unsqueeze(0)
            vs = self.v_cache.index_select(0, span.context_slots).transpose(0, 1).unsqueeze(0)
            length, total = span.end - span.start, span.context_slots.numel()
            rows = torch.arange(length, device=q.device).unsqueeze(1) + span.context_start
            mask = torch.arange(total, device=q.device).unsqueeze(0) <= rows
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, enable_gqa=gqa)
        return o.squeeze(0).transpose(0, 1)
