"""Tiny random-weight checkpoints for the engine tests, saved by transformers itself (save_pretrained),
so the engine reads exactly what a Hugging Face folder holds."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 320
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
              bos_token_id=1, eos_token_id=2, pad_token_id=0)
LLAMA = dict(COMMON, intermediate_size=128, num_key_value_heads=2, initializer_range=0.1, rms_norm_eps=1e-6)

FAMILIES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", dict(LLAMA, tie_word_embeddings=False)),
    "llama3": ("LlamaConfig", "LlamaForCausalLM", dict(LLAMA, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64})),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(LLAMA, num_key_value_heads=1, sliding_window=None)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(LLAMA, tie_word_embeddings=True)),
    "opt": ("OPTConfig", "OPTForCausalLM", dict(COMMON, ffn_dim=128, word_embed_proj_dim=64, init_std=0.1,
                                                 bos_token_id=2, eos_token_id=2, pad_token_id=1)),
}


def build(family: str, folder: Path, seed: int = 0, max_shard_size: str | None = None):
    """Save a random checkpoint of `family` into `folder`; returns the transformers model (float32)."""
    import transformers

    config_name, model_name, kwargs = FAMILIES[family]
    config = getattr(transformers, config_name)(**kwargs)
    torch.manual_seed(seed)
    model = getattr(transformers, model_name)(config).eval()
    if family == "opt":  # OPT initialises LayerNorms to 1/0: perturb them so the test sees them
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "layer_norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
    extra = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **extra)
    return model


def prompts(lengths: list[int], seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]


def reference_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy generate for one unpadded prompt: the tokens after the prompt."""
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                             attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
    return out[0, len(prompt):].tolist()
