"""What the runtime needs from a checkpoint's config.json beyond the architecture numbers of ModelSpec:
rotary settings, norm epsilon, activation, end-of-sequence ids and the context length."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from hexserve.errors import SpecError
from hexserve.specs.model import ModelSpec, model_from_config

ROPE_TYPES = ("default", "linear", "llama3")


@dataclass(frozen=True)
class ModelConfig:
    spec: ModelSpec
    path: Path
    rope_theta: float = 10000.0
    rope_scaling: dict = field(default_factory=dict)  # {"rope_type": "llama3", "factor": 8.0, ...}
    norm_eps: float = 1e-5
    hidden_act: str = "silu"
    eos_token_ids: tuple[int, ...] = ()
    max_model_len: int = 2048
    do_layer_norm_before: bool = True  # OPT-350m is post-norm

    @property
    def family(self) -> str:
        return self.spec.family


def _rope(config: dict, source: str) -> tuple[float, dict]:
    # transformers 5 writes "rope_parameters"; earlier versions "rope_theta" plus "rope_scaling".
    params = dict(config.get("rope_parameters") or {})
    theta = float(params.pop("rope_theta", None) or config.get("rope_theta") or 10000.0)
    scaling = params or dict(config.get("rope_scaling") or {})
    kind = scaling.get("rope_type") or scaling.get("type") or "default"
    if kind not in ROPE_TYPES:
        raise SpecError(f"{source}: rope type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}")
    scaling["rope_type"] = kind
    return theta, scaling


def _eos_ids(config: dict, folder: Path) -> tuple[int, ...]:
    ids: list[int] = []
    sources = [config]
    gen = folder / "generation_config.json"
    if gen.is_file():
        sources.append(json.loads(gen.read_text()))
    for src in sources:
        value = src.get("eos_token_id")
        for i in value if isinstance(value, list) else [value]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return tuple(ids)


def load_config(folder: str | Path) -> ModelConfig:
    """Read `folder/config.json` (a Hugging Face checkpoint) into a ModelConfig."""
    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise SpecError(f"model: no config.json in {str(folder)!r}; give a Hugging Face checkpoint folder or 'smollm2'")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: unreadable JSON ({e}); use the config.json that ships with the checkpoint") from None
    spec = model_from_config(config, name=folder.name, source=str(path))
    theta, scaling = _rope(config, str(path))
    max_len = spec.max_position_embeddings
    if config.get("sliding_window") and config.get("use_sliding_window", True):
        # Attention here is full; it equals sliding-window attention while the context fits the window.
        max_len = min(max_len, int(config["sliding_window"]))
    act = config.get("hidden_act") or config.get("activation_function") or ("relu" if spec.family == "opt" else "silu")
    return ModelConfig(
        spec=spec,
        path=folder,
        rope_theta=theta,
        rope_scaling=scaling,
        norm_eps=float(config.get("rms_norm_eps") or config.get("layer_norm_eps") or 1e-5),
        hidden_act=str(act),
        eos_token_ids=_eos_ids(config, folder),
        max_model_len=max_len,
        do_layer_norm_before=bool(config.get("do_layer_norm_before", True)),
    )
