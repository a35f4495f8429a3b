"""A model's architecture numbers, read from a Hugging Face config.json.

Supported: Llama 1/2/3 and Mistral (gated MLP, RMSNorm, GQA), Qwen2 (the same with q/k/v biases) and
OPT (ReLU MLP with biases, LayerNorm, learned positions). Parameter counts equal `sum(p.numel())` of the
transformers model built from the same config (tests/test_model_spec.py checks each family).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hexserve.errors import SpecError
from hexserve.specs.examples import example_names, examples_dir
from hexserve.specs.files import read_json

SUPPORTED_ARCHITECTURES = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "mistral",
    "Qwen2ForCausalLM": "qwen2",
    "OPTForCausalLM": "opt",
}

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # llama | mistral | qwen2 | opt
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_embeddings: bool
    dtype: str
    max_position_embeddings: int
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    gated_mlp: bool = True  # Llama's gate/up/down; OPT has fc1/fc2
    norm_bias: bool = False  # LayerNorm (OPT) carries a bias, RMSNorm does not
    final_norm: bool = True
    learned_positions: int = 0  # rows of a learned position table (OPT: max positions + 2)
    embed_dim: int = 0  # OPT's word_embed_proj_dim when it differs from hidden_size

    # --------------------------------------------------------------- sizes

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attention_params(self) -> int:
        h = self.hidden_size
        weights = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        biases = (self.q_dim + 2 * self.kv_dim) * self.qkv_bias + h * self.o_bias
        return weights + biases

    @property
    def mlp_params(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        if self.gated_mlp:
            return 3 * h * i + (2 * i + h) * self.mlp_bias
        return 2 * h * i + (i + h) * self.mlp_bias

    @property
    def norm_params(self) -> int:
        """One norm's parameters (weight, and bias for LayerNorm)."""
        return self.hidden_size * (2 if self.norm_bias else 1)

    @property
    def layer_params(self) -> int:
        return self.attention_params + self.mlp_params + 2 * self.norm_params

    @property
    def layer_replicated_params(self) -> int:
        """Parameters of a layer that every tensor-parallel rank holds whole: the norms and the
        biases added after a row-parallel projection (o_proj, down/fc2)."""
        return 2 * self.norm_params + self.hidden_size * (self.o_bias + self.mlp_bias)

    @property
    def embedding_params(self) -> int:
        """Token (and position) embeddings and OPT's projections: what the first stage holds."""
        e = self.embed_dim or self.hidden_size
        projections = 2 * e * self.hidden_size if e != self.hidden_size else 0
        return self.vocab_size * e + self.learned_positions * self.hidden_size + projections

    @property
    def head_params(self) -> int:
        """Final norm and LM head: what the last stage holds (the head is shared when tied)."""
        lm_head = 0 if self.tie_embeddings else self.vocab_size * (self.embed_dim or self.hidden_size)
        return self.norm_params * self.final_norm + lm_head

    @property
    def params(self) -> int:
        return self.num_layers * self.layer_params + self.embedding_params + self.head_params

    @property
    def weights_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """Key and value of one token over all layers (GQA: only the KV heads are stored)."""
        return 2 * self.num_layers * self.kv_dim * self.dtype_bytes

    def valid_tp_degrees(self, limit: int = 64) -> list[int]:
        """TP degrees the runtime can shard: they divide the query heads, and the KV heads divide
        evenly among ranks or are replicated whole on groups of ranks."""
        return [
            t
            for t in range(1, limit + 1)
            if self.num_heads % t == 0 and (self.num_kv_heads % t == 0 or t % self.num_kv_heads == 0)
        ]

    def kv_heads_per_rank(self, tp: int) -> int:
        """With TP wider than the KV heads, each rank keeps one KV head (replicated), as vLLM does."""
        return max(1, self.num_kv_heads // tp)


# ----------------------------------------------------------------------------- reading config.json


def _get(config: dict, key: str, source: str, default: object = None) -> object:
    value = config.get(key, default)
    if value is None:
        raise SpecError(f"{source}: config.json lacks {key!r}; use the config.json that ships with the checkpoint")
    return value


def _dtype(config: dict, source: str) -> str:
    # transformers 5 writes "dtype", earlier versions "torch_dtype"; absent means the serving default.
    dtype = str(config.get("dtype") or config.get("torch_dtype") or "float16").removeprefix("torch.")
    if dtype not in DTYPE_BYTES:
        raise SpecError(f"{source}: dtype {dtype!r} is not supported; use one of {', '.join(DTYPE_BYTES)}")
    return dtype


def _family(config: dict, source: str) -> str:
    architectures = config.get("architectures") or []
    for arch in architectures:
        if arch in SUPPORTED_ARCHITECTURES:
            return SUPPORTED_ARCHITECTURES[arch]
    by_type = {v: v for v in SUPPORTED_ARCHITECTURES.values()}
    if not architectures and config.get("model_type") in by_type:
        return by_type[config["model_type"]]
    named = ", ".join(architectures) or f"model_type {config.get('model_type')!r}"
    raise SpecError(
        f"{source}: architecture {named} is not supported; supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
    )


def model_from_config(config: dict, name: str = "model", source: str = "config.json") -> ModelSpec:
    """The ModelSpec of a parsed config.json."""
    family = _family(config, source)
    num_layers = int(_get(config, "num_hidden_layers", source))
    hidden = int(_get(config, "hidden_size", source))
    heads = int(_get(config, "num_attention_heads", source))
    common = dict(
        name=name,
        family=family,
        num_layers=num_layers,
        hidden_size=hidden,
        num_heads=heads,
        vocab_size=int(_get(config, "vocab_size", source)),
        dtype=_dtype(config, source),
        max_position_embeddings=int(config.get("max_position_embeddings") or 2048),
    )
    if family == "opt":
        embed_dim = int(config.get("word_embed_proj_dim") or hidden)
        return ModelSpec(
            **common,
            num_kv_heads=heads,
            head_dim=hidden // heads,
            intermediate_size=int(_get(config, "ffn_dim", source)),
            tie_embeddings=bool(config.get("tie_word_embeddings", True)),
            qkv_bias=bool(config.get("enable_bias", True)),
            o_bias=bool(config.get("enable_bias", True)),
            mlp_bias=bool(config.get("enable_bias", True)),
            gated_mlp=False,
            norm_bias=bool(config.get("layer_norm_elementwise_affine", True)),
            final_norm=bool(config.get("do_layer_norm_before", True))
            and not config.get("_remove_final_layer_norm", False),
            learned_positions=common["max_position_embeddings"] + 2,
            embed_dim=embed_dim if embed_dim != hidden else 0,
        )
    is_qwen = family == "qwen2"
    attention_bias = bool(config.get("attention_bias", False))
    return ModelSpec(
        **common,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        intermediate_size=int(_get(config, "intermediate_size", source)),
        tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        qkv_bias=is_qwen or attention_bias,
        o_bias=attention_bias and not is_qwen,
        mlp_bias=bool(config.get("mlp_bias", False)),
    )


# Names that mean a shipped config: "smollm2" is also the runtime's name for the embedded default model.
SHORT_NAMES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m"}


def resolve_model_path(path_or_name: str) -> Path:
    """A config.json path, a checkpoint folder, or a shipped short name such as "llama-2-70b"."""
    path = Path(path_or_name)
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return path
    name = SHORT_NAMES.get(path_or_name.lower(), path_or_name.lower())
    shipped = examples_dir() / "models" / name / "config.json"
    if shipped.is_file():
        return shipped
    known = ", ".join(example_names("models"))
    raise SpecError(
        f"model: no config.json at {path_or_name!r}; give a checkpoint folder, a config.json or one of {known}"
    )


def load_model(path_or_name: str) -> ModelSpec:
    path = resolve_model_path(path_or_name)
    config = read_json(path)
    if not isinstance(config, dict):
        raise SpecError(f"{path}: expected a JSON object (a Hugging Face config.json)")
    name = path.parent.name if path.name == "config.json" else path.stem
    return model_from_config(config, name=name, source=str(path))
