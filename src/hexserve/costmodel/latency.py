"""Time of prefill, of one decode step, of TP all-reduce, of a pipeline send and of a KV handoff.

Every operation is a roofline, max(FLOPs / achievable FLOP/s, bytes / achievable bandwidth), plus a
fixed per-call term (kernel launch, collective set-up): profiles of real engines show those fixed terms
dominate small decode steps (Vidur's profiles of vLLM: docs/references.md). docs/cost-model.md gives
each formula.
"""

from __future__ import annotations

from dataclasses import dataclass

from hexserve.costmodel.calibration import Calibration, Efficiency
from hexserve.costmodel.stage import StageShape
from hexserve.specs.gpus import DeviceType
from hexserve.specs.links import Link
from hexserve.specs.model import ModelSpec


@dataclass(frozen=True)
class Op:
    name: str
    flops: float
    bytes: float
    kernels: int = 1
    is_attention: bool = False


def op_time(op: Op, device: DeviceType, eff: Efficiency) -> float:
    flop_rate = device.tflops * 1e12 * (eff.attention if op.is_attention else eff.matmul)
    byte_rate = device.mem_bandwidth_gbps * 1e9 * eff.memory
    return op.kernels * eff.kernel_s + max(op.flops / flop_rate, op.bytes / byte_rate)


def _linear(name: str, tokens: int, d_in: float, d_out: float, dtype_bytes: int) -> Op:
    """A GEMM of `tokens` rows through a d_in x d_out weight: read the weight once, activations in and out."""
    return Op(name, 2 * tokens * d_in * d_out, (d_in * d_out + tokens * (d_in + d_out)) * dtype_bytes)


def _rank_dims(model: ModelSpec, tp: int) -> tuple[int, int]:
    """Per-rank width of the queries and of the keys (= values)."""
    return model.q_dim // tp, model.kv_heads_per_rank(tp) * model.head_dim


def prefill_attention(model: ModelSpec, tp: int, batch: int, prompt_len: int) -> Op:
    """Causal attention over fresh prompts: QK^T and PV each cost s^2 * d_h FLOPs per head (half of the
    square is masked); a fused kernel reads Q, K, V and writes O and the KV cache once."""
    q, kv = _rank_dims(model, tp)
    flops = 2 * batch * prompt_len**2 * q
    tokens = batch * prompt_len
    return Op("attention", flops, tokens * (2 * q + 4 * kv) * model.dtype_bytes, is_attention=True)


def decode_attention(model: ModelSpec, tp: int, batch: int, context_len: int) -> Op:
    """One new query per sequence against its whole cache: bound by reading the K and V of the context
    (GQA: only the rank's KV heads)."""
    q, kv = _rank_dims(model, tp)
    flops = 4 * batch * context_len * q
    return Op("attention", flops, (2 * batch * context_len * kv + 2 * batch * q) * model.dtype_bytes, is_attention=True)


def layer_ops(model: ModelSpec, tp: int, tokens: int, attention: Op) -> list[Op]:
    """The operations of one transformer layer on one TP rank (Megatron sharding: column-parallel
    q/k/v and up projections, row-parallel o and down projections)."""
    b, h, i = model.dtype_bytes, model.hidden_size, model.intermediate_size
    q, kv = _rank_dims(model, tp)
    up = (2 if model.gated_mlp else 1) * i // tp
    return [
        _linear("qkv", tokens, h, q + 2 * kv, b),
        attention,
        _linear("o", tokens, q, h, b),
        _linear("up", tokens, h, up, b),
        Op("activation", 0, tokens * (up + i // tp) * b),
        _linear("down", tokens, i // tp, h, b),
        # two norms, two residual adds, rotary on q and k: read and write the stream a few times
        Op("norms+residual", 0, tokens * (10 * h + 2 * (q + kv)) * b, kernels=5),
    ]


def allreduce_time(nbytes: float, tp: int, link: Link | None, eff: Efficiency) -> float:
    """Ring all-reduce: 2(t-1) steps each moving nbytes/t over the group's slowest link, plus the fixed
    cost of the call."""
    if tp <= 1:
        return 0.0
    if link is None:
        raise ValueError("a TP group wider than one device needs its slowest link")
    step = link.latency + nbytes / (tp * link.bandwidth * eff.link)
    return eff.allreduce_s + 2 * (tp - 1) * step


def send_time(nbytes: float, link: Link, eff: Efficiency) -> float:
    """One point-to-point transfer."""
    return eff.p2p_s + link.latency + nbytes / (link.bandwidth * eff.link)


def pp_send_time(model: ModelSpec, tokens: int, link: Link, eff: Efficiency) -> float:
    """Hidden states of `tokens` tokens across a stage boundary."""
    return send_time(tokens * model.hidden_size * model.dtype_bytes, link, eff)


def kv_transfer_time(
    model: ModelSpec, prompt_len: int, link: Link, eff: Efficiency, num_layers: int | None = None
) -> float:
    """The prompt's KV cache (all layers, or `num_layers` of them) from a prefill to a decode device."""
    layers = model.num_layers if num_layers is None else num_layers
    nbytes = prompt_len * model.kv_bytes_per_token * layers / model.num_layers
    return send_time(nbytes, link, eff)


def _stage_time(model: ModelSpec, stage: StageShape, eff: Efficiency, tokens: int, attention: Op, logits: int) -> float:
    """Compute and TP communication of one stage's pass over `tokens` tokens."""
    device, t = stage.device_type, stage.tp
    layer = sum(op_time(op, device, eff) for op in layer_ops(model, t, tokens, attention))
    stream_bytes = tokens * model.hidden_size * model.dtype_bytes
    comm = 2 * allreduce_time(stream_bytes, t, stage.tp_link, eff)
    total = stage.num_layers * (layer + comm)
    if stage.has_embedding:  # vocab-parallel lookup, then an all-reduce of the partial rows
        total += op_time(Op("embedding", 0, 2 * stream_bytes), device, eff)
        total += allreduce_time(stream_bytes, t, stage.tp_link, eff)
    if stage.has_head:  # logits only for each sequence's last token, then sampling
        embed = model.embed_dim or model.hidden_size
        total += op_time(_linear("lm_head", logits, embed, model.vocab_size / t, model.dtype_bytes), device, eff)
        total += op_time(Op("sample", 0, logits * model.vocab_size * 4, kernels=3), device, eff)
    return total


def prefill_time(model: ModelSpec, stage: StageShape, calibration: Calibration, batch: int, prompt_len: int) -> float:
    """Seconds for one stage to prefill `batch` prompts of `prompt_len` tokens each."""
    eff = calibration.for_type(stage.device_type.name)
    attention = prefill_attention(model, stage.tp, batch, prompt_len)
    return _stage_time(model, stage, eff, batch * prompt_len, attention, logits=batch)


def decode_step_time(
    model: ModelSpec, stage: StageShape, calibration: Calibration, batch: int, context_len: int
) -> float:
    """Seconds for one stage to produce one token for each of `batch` sequences of `context_len` tokens."""
    eff = calibration.for_type(stage.device_type.name)
    attention = decode_attention(model, stage.tp, batch, context_len)
    return _stage_time(model, stage, eff, batch, attention, logits=batch)


def pipeline_time(
    model: ModelSpec,
    stages: list[StageShape],
    stage_times: list[float],
    boundary_links: list[Link],
    tokens: int,
    calibration: Calibration,
) -> float:
    """Latency of one pass through a pipeline: every stage in turn, a send at each boundary, and the
    engine's fixed per-step cost once."""
    if len(boundary_links) != len(stages) - 1:
        raise ValueError("a pipeline of n stages has n - 1 boundary links")
    sends = sum(
        pp_send_time(model, tokens, link, calibration.for_type(stage.device_type.name))
        for stage, link in zip(stages, boundary_links, strict=False)
    )
    return sum(stage_times) + sends + calibration.for_type(stages[0].device_type.name).step_s
