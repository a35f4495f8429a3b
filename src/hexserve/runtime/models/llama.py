"""Llama 1/2/3, Mistral and Qwen2: pre-norm decoder layers of GQA attention with rotary positions and a
gated SiLU MLP. Qwen2 adds q/k/v biases; embeddings may be tied to the LM head. Built whole or as one
worker's `Shard` (a stage's layers, a TP rank's heads and MLP columns)."""

from __future__ import annotations

import torch
from torch import nn

from hexserve.runtime.config import ModelConfig
from hexserve.runtime.layers.activation import activation, gated
from hexserve.runtime.layers.attention import AttentionMetadata, PagedAttention
from hexserve.runtime.layers.embedding import Embedding, LMHead
from hexserve.runtime.layers.linear import MergedLinear, RowLinear
from hexserve.runtime.layers.norm import RMSNorm
from hexserve.runtime.layers.rotary import RotaryEmbedding, apply_rotary
from hexserve.runtime.models.stage import StageModel
from hexserve.runtime.parallel import WHOLE, Shard

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin of each token's position, looked up once per step


class LlamaAttention(nn.Module):
    def __init__(self, cfg: ModelConfig, shard: Shard = WHOLE):
        super().__init__()
        s = cfg.spec
        kv_piece = shard.kv_piece(s.num_kv_heads)
        self.num_heads, self.head_dim = shard.part(s.num_heads), s.head_dim
        self.num_kv_heads = s.num_kv_heads // kv_piece[1]
        parts = {"q": s.q_dim, "k": s.kv_dim, "v": s.kv_dim}
        pieces = {"k": kv_piece, "v": kv_piece}
        self.qkv_proj = MergedLinear(s.hidden_size, parts, bias=s.qkv_bias, shard=shard, pieces=pieces)
        self.o_proj = RowLinear(s.q_dim, s.hidden_size, bias=s.o_bias, shard=shard)
        self.attn = PagedAttention(self.num_heads, self.num_kv_heads, s.head_dim)

    def forward(self, rope: Rope, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        qkv = self.qkv_proj(x)
        heads, d = self.num_heads + self.num_kv_heads, self.head_dim
        # q and k sit side by side in the merged output: rotate all their heads in one pass.
        qk = apply_rotary(qkv[:, : heads * d].view(-1, heads, d), *rope)
        q, k = qk.split([self.num_heads, self.num_kv_heads], dim=1)
        v = qkv[:, heads * d :].view(-1, self.num_kv_heads, d)
        return self.o_proj(self.attn(q, k, v, meta))


class LlamaMLP(nn.Module):
    def __init__(self, cfg: ModelConfig, shard: Shard = WHOLE):
        super().__init__()
        s = cfg.spec
        parts = {"gate": s.intermediate_size, "up": s.intermediate_size}
        self.gate_up_proj = MergedLinear(s.hidden_size, parts, bias=s.mlp_bias, shard=shard)
        self.down_proj = RowLinear(s.intermediate_size, s.hidden_size, bias=s.mlp_bias, shard=shard)
        self.act = activation(cfg.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(gated(self.act, self.gate_up_proj(x)))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig, shard: Shard = WHOLE):
        super().__init__()
        h, eps = cfg.spec.hidden_size, cfg.norm_eps
        self.input_layernorm = RMSNorm(h, eps)
        self.self_attn = LlamaAttention(cfg, shard)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.mlp = LlamaMLP(cfg, shard)

    def forward(self, rope: Rope, x: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        x = x + self.self_attn(rope, self.input_layernorm(x), meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaForCausalLM(StageModel):
    # Checkpoint names that land in a merged layer: name -> (our name, part).
    packed_modules = {
        "q_proj": ("qkv_proj", "q"),
        "k_proj": ("qkv_proj", "k"),
        "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", "gate"),
        "up_proj": ("gate_up_proj", "up"),
    }
    embedding_name = "model.embed_tokens.weight"

    def __init__(self, cfg: ModelConfig, shard: Shard = WHOLE):
        super().__init__(cfg, shard)
        s = cfg.spec
        self.rotary = RotaryEmbedding(s.head_dim, cfg.max_model_len, cfg.rope_theta, cfg.rope_scaling)
        self.model = nn.Module()
        if shard.is_first:
            self.model.embed_tokens = Embedding(s.vocab_size, s.hidden_size, shard)
        self.model.layers = self.build_layers(lambda: LlamaDecoderLayer(cfg, shard))
        if shard.is_last:
            self.model.norm = RMSNorm(s.hidden_size, cfg.norm_eps)
            self.lm_head = LMHead(s.vocab_size, s.hidden_size, shard)
            self.tie_head(getattr(self.model, "embed_tokens", None))

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.model.embed_tokens(input_ids)

    def run_layers(self, x: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        rope = self.rotary.lookup(positions, x.dtype)
        for layer in self.model.layers.values():
            x = layer(rope, x, meta)
        return x

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x)
