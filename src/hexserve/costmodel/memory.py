"""Memory of one device of a stage: its weight slice, activation workspace, reserve and KV pool."""

from __future__ import annotations

from dataclasses import dataclass

from hexserve.costmodel.calibration import Calibration
from hexserve.costmodel.stage import StageShape
from hexserve.specs.gpus import DeviceType
from hexserve.specs.model import ModelSpec

# The engine's batch limits bound the activation workspace (vLLM's max_num_batched_tokens/max_num_seqs).
MAX_BATCH_TOKENS = 2048
MAX_SEQS = 256


def weight_bytes_per_rank(model: ModelSpec, stage: StageShape) -> int:
    """One rank's weights: its 1/tp of every sharded matrix, whole copies of norms and late biases.

    A tied LM head on a last stage that is not also the first needs its own copy of the embedding."""
    t = stage.tp
    per_layer = (model.layer_params - model.layer_replicated_params) / t + model.layer_replicated_params
    params = stage.num_layers * per_layer
    if stage.has_embedding:
        params += model.embedding_params / t
    if stage.has_head:
        params += model.head_params / t
        if model.tie_embeddings and not stage.has_embedding:
            params += model.vocab_size * (model.embed_dim or model.hidden_size) / t
    return int(params * model.dtype_bytes)


def kv_bytes_per_token_per_rank(model: ModelSpec, stage: StageShape) -> int:
    """Key and value of one token for the stage's layers and the rank's KV heads."""
    return 2 * stage.num_layers * model.kv_heads_per_rank(stage.tp) * model.head_dim * model.dtype_bytes


def activation_bytes_per_rank(
    model: ModelSpec, stage: StageShape, max_batch_tokens: int = MAX_BATCH_TOKENS, max_seqs: int = MAX_SEQS
) -> int:
    """Peak live activations of one forward pass: the residual stream and its normed copy, the largest
    sharded intermediate (q/k/v or the MLP's up projection), and fp32 logits on the last stage."""
    t, b = stage.tp, model.dtype_bytes
    qkv = model.q_dim // t + 2 * model.kv_heads_per_rank(t) * model.head_dim
    mlp = model.intermediate_size * (2 if model.gated_mlp else 1) // t
    per_token = (3 * model.hidden_size + max(qkv, mlp)) * b
    logits = max_seqs * model.vocab_size // t * 4 if stage.has_head else 0
    return max_batch_tokens * per_token + logits


@dataclass(frozen=True)
class MemoryUse:
    """Bytes on one device. Everything not static and not reserve is the KV pool."""

    capacity: int
    usable: int
    weights: int
    activations: int
    kv_per_token: int

    @property
    def static(self) -> int:
        return self.weights + self.activations

    @property
    def kv_pool(self) -> int:
        return max(0, self.usable - self.static)

    @property
    def max_kv_tokens(self) -> int:
        return self.kv_pool // self.kv_per_token if self.kv_per_token else 0

    def used(self, kv_tokens: int) -> int:
        return self.static + kv_tokens * self.kv_per_token

    def fits(self, kv_tokens: int = 0) -> bool:
        return self.used(kv_tokens) <= self.usable

    def shortfall(self, kv_tokens: int = 0) -> int:
        """Bytes missing to hold the weights, workspace and kv_tokens (0 when it fits)."""
        return max(0, self.used(kv_tokens) - self.usable)


def stage_memory(
    model: ModelSpec,
    stage: StageShape,
    device_type: DeviceType,
    calibration: Calibration,
    max_batch_tokens: int = MAX_BATCH_TOKENS,
    max_seqs: int = MAX_SEQS,
) -> MemoryUse:
    """Memory of one device (of type `device_type`) that is a rank of `stage`."""
    capacity = device_type.memory_bytes
    utilization = calibration.for_type(device_type.name).memory_utilization
    return MemoryUse(
        capacity=capacity,
        usable=int(capacity * utilization),
        weights=weight_bytes_per_rank(model, stage),
        activations=activation_bytes_per_rank(model, stage, max_batch_tokens, max_seqs),
        kv_per_token=kv_bytes_per_token_per_rank(model, stage),
    )
