"""OPT: learned positions (offset by 2), LayerNorm, multi-head attention with biases and a ReLU MLP;
pre-norm except OPT-350m, which also projects between a smaller embedding and the hidden size. Built
whole or as one worker's `Shard`; the small projections and the position table are replicated."""

from __future__ import annotations

import torch
from torch import nn

from hexserve.runtime.config import ModelConfig
from hexserve.runtime.layers.activation import activation
from hexserve.runtime.layers.attention import AttentionMetadata, PagedAttention
from hexserve.runtime.layers.embedding import Embedding, LMHead
from hexserve.runtime.layers.linear import Linear, MergedLinear, RowLinear
from hexserve.runtime.layers.norm import LayerNorm
from hexserve.runtime.models.stage import StageModel
from hexserve.runtime.parallel import WHOLE, Shard

POSITION_OFFSET = 2  # OPT's learned position table reserves its first two rows


class OPTAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shard: Shard = WHOLE):
        super().__init__()
        s = cfg.spec
        self.num_heads, self.head_dim = shard.part(s.num_heads), s.head_dim
        parts = {"q": s.q_dim, "k": s.kv_dim, "v": s.kv_dim}
        self.qkv_proj = MergedLinear(s.hidden_size, parts, bias=s.qkv_bias, shard=shard)
        self.out_proj = RowLinear(s.q_dim, s.hidden_size, bias=s.o_bias, shard=shard)
        self.attn = PagedAttention(self.num_heads, self.num_heads, s.head_dim)

    def forward(self, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        q, k, v = (t.view(-1, self.num_heads, self.head_dim) for t in self.qkv_proj.split(self.qkv_proj(x)))
        return self.out_proj(self.attn(q, k, v, meta))


class OPTDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, shard: Shard = WHOLE):
        super().__init__()
        s = cfg.spec
        self.pre_norm = cfg.do_layer_norm_before
        self.self_attn = OPTAttention(cfg, shard)
        self.self_attn_layer_norm = LayerNorm(s.hidden_size, cfg.norm_eps, s.norm_bias)
        self.fc1 = Linear(s.hidden_size, s.intermediate_size, bias=s.mlp_bias, shard=shard)
        self.fc2 = RowLinear(s.intermediate_size, s.hidden_size, bias=s.mlp_bias, shard=shard)
        self.final_layer_norm = LayerNorm(s.hidden_size, cfg.norm_eps, s.norm_bias)
        self.act = activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        x = self._residual(x, lambda h: self.self_attn(h, meta), self.self_attn_layer_norm)
        return self._residual(x, lambda h: self.fc2(self.act(self.fc1(h))), self.final_layer_norm)

    def _residual(self, x: torch.Tensor, block, norm: LayerNorm) -> torch.Tensor:
        if self.pre_norm:
            return x + block(norm(x))
        return norm(x + block(x))


class OPTForCausalLM(StageModel):
    packed_modules = {"q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v")}
    embedding_name = "model.decoder.embed_tokens.weight"

    def __init__(self, cfg: ModelConfig, shard: Shard = WHOLE):
        super().__init__(cfg, shard)
        s = cfg.spec
        embed_dim = s.embed_dim or s.hidden_size
        # The decoder is registered before the LM head: a tied weight is then named after the embedding.
        self.model = nn.Module()
        self.model.decoder = d = nn.Module()
        if shard.is_first:
            d.embed_tokens = Embedding(s.vocab_size, embed_dim, shard)
            d.embed_positions = Embedding(s.max_position_embeddings + POSITION_OFFSET, s.hidden_size)
            if s.embed_dim:
                d.project_in = Linear(embed_dim, s.hidden_size)
        d.layers = self.build_layers(lambda: OPTDecoderLayer(cfg, shard))
        if shard.is_last:
            if s.final_norm:
                d.final_layer_norm = LayerNorm(s.hidden_size, cfg.norm_eps, s.norm_bias)
            if s.embed_dim:
                d.project_out = Linear(s.hidden_size, embed_dim)
            self.lm_head = LMHead(s.vocab_size, embed_dim, shard)
            self.tie_head(getattr(d, "embed_tokens", None))

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        d = self.model.decoder
        x = d.embed_tokens(input_ids)
        if hasattr(d, "project_in"):
            x = d.project_in(x)
        return x + d.embed_positions(positions + POSITION_OFFSET)

    def run_layers(self, x: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        for layer in self.model.decoder.layers.values():
            x = layer(x, meta)
        return x

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        d = self.model.decoder
        if hasattr(d, "final_layer_norm"):
            x = d.final_layer_norm(x)
        if hasattr(d, "project_out"):
            x = d.project_out(x)
        return x
