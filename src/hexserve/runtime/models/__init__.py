"""Model classes by family."""

from __future__ import annotations

from torch import nn

from hexserve.runtime.config import ModelConfig
from hexserve.runtime.models.llama import LlamaForCausalLM
from hexserve.runtime.models.opt import OPTForCausalLM

MODELS: dict[str, type[nn.Module]] = {
    "llama": LlamaForCausalLM,
    "mistral": LlamaForCausalLM,
    "qwen2": LlamaForCausalLM,
    "opt": OPTForCausalLM,
}


def model_class(cfg: ModelConfig) -> type[nn.Module]:
    return MODELS[cfg.family]
