"""Activations, including the gated SiLU of Llama's MLP applied to the merged gate|up output."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hexserve.errors import SpecError

ACTIVATIONS = {"silu": F.silu, "relu": F.relu, "gelu": F.gelu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise SpecError(f"config.json: hidden_act {name!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def gated(act, gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return act(gate) * up
