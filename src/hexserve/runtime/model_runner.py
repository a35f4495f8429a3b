"""Runs the model (or one worker's shard of it) for one step: the step's tensors and attention
metadata on this device, the stage's forward pass, and on the last stage the logits of the rows that
pick a next token, sampled with each request's own generator."""

from __future__ import annotations

import torch

from hexserve.runtime.config import ModelConfig
from hexserve.runtime.device import default_dtype
from hexserve.runtime.kv_cache import CacheShape, allocate_cache
from hexserve.runtime.layers.attention import AttentionMetadata, PagedAttention, PrefillSpan
from hexserve.runtime.layers.sampler import SamplingBatch, sample
from hexserve.runtime.loader import load_weights
from hexserve.runtime.models import model_class
from hexserve.runtime.parallel import WHOLE, Shard
from hexserve.runtime.step import StepInput


def draw_seed(seed: int, position: int) -> int:
    """A well-spread seed per (request seed, output position): the golden-ratio increment of SplitMix64."""
    return (seed + (position + 1) * 0x9E3779B97F4A7C15) % 2**63


class ModelRunner:
    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype, shard: Shard = WHOLE):
        self.cfg, self.device, self.dtype, self.shard = cfg, device, dtype, shard
        with torch.device(device), default_dtype(dtype):
            self.model = model_class(cfg)(cfg, shard)
        load_weights(self.model, cfg.path)
        self.model.eval()
        self.attention = [m for m in self.model.modules() if isinstance(m, PagedAttention)]
        self.cache: torch.Tensor | None = None

    def cache_shape(self, block_size: int) -> CacheShape:
        heads = self.attention[0].num_kv_heads if self.attention else 1
        return CacheShape(len(self.attention), heads, self.cfg.spec.head_dim, block_size, self.dtype)

    def allocate_cache(self, shape: CacheShape, num_blocks: int) -> None:
        self.cache = allocate_cache(shape, num_blocks, self.device)
        for i, attn in enumerate(self.attention):
            attn.k_cache, attn.v_cache = self.cache[0, i], self.cache[1, i]

    # ------------------------------------------------------------------------------ one step

    @torch.inference_mode()
    def run(self, step: StepInput) -> list[tuple[int, float]]:
        """The whole model in this process: (token, logprob) for each sampled row, in order."""
        return self.sample(self.forward(step), step) or []

    @torch.inference_mode()
    def forward(self, step: StepInput, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """This stage's output for every token of the step (`hidden`: what the previous stage sent)."""
        input_ids, positions, meta = step.tensors(self.device, self.dtype)
        return self.model(input_ids, positions, meta, hidden)

    @torch.inference_mode()
    def sample(self, hidden: torch.Tensor, step: StepInput) -> list[tuple[int, float]] | None:
        """Last stage: the sampled rows' next tokens. Every TP rank computes its vocabulary slice of the
        logits; rank 0 gathers and samples (the others return None)."""
        if not step.sample_rows:
            return []
        logits = self.model.compute_logits(hidden[torch.tensor(step.sample_rows, device=self.device)])
        if logits is None:
            return None
        params = SamplingBatch(
            temperatures=[s.temperature for s in step.samples],
            top_ks=[s.top_k for s in step.samples],
            top_ps=[s.top_p for s in step.samples],
            generators=[self._generator(s.seed, s.position) for s in step.samples],
        )
        return list(zip(*sample(logits, params), strict=True))

    def _generator(self, seed: int | None, position: int) -> torch.Generator | None:
        """The draw for output token `position` of a seeded request: its own generator, seeded from the
        request's seed and the position, so the same tokens come out wherever the request is sampled
        (one process, a plan, after a preemption or a prefill -> decode handoff)."""
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(draw_seed(seed, position))

    # ------------------------------------------------------------------------------ scoring

    @torch.inference_mode()
    def prompt_logits(self, token_ids: list[int]) -> torch.Tensor:
        """Logits at every position of one prompt, without touching the KV cache (tests, scoring)."""
        n = len(token_ids)
        meta = AttentionMetadata(slot_mapping=None, prefills=[PrefillSpan(0, n)])
        positions = torch.arange(n, device=self.device)
        hidden = self.model(torch.tensor(token_ids, device=self.device), positions, meta)
        return self.model.compute_logits(hidden).float()
