"""Read a Hugging Face checkpoint's safetensors (one file or sharded) into a model built from our layers.

Tensors are opened with `safe_open` and handed to each parameter's `weight_loader` as lazy slices, so a
tensor-parallel layer reads only the rows or columns it keeps, and a pipeline stage skips the tensors
of the other stages without reading them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from safetensors import SafetensorError, safe_open
from torch import nn

from hexserve.errors import SpecError

# Buffers and unused tensors some checkpoints carry.
SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "masked_bias", "attn.bias")


def checkpoint_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = [folder / name for name in sorted(set(weight_map.values()))]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        hint = " (it has PyTorch .bin weights: re-save them with safetensors)" if any(folder.glob("*.bin")) else ""
        raise SpecError(f"model: no .safetensors weights in {str(folder)!r}{hint}; give a checkpoint folder")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise SpecError(f"model: {folder} lacks shard {missing[0]} named in its index; download the whole checkpoint")
    return files


def _target(model: nn.Module, name: str) -> tuple[str, str | None]:
    """Our parameter name and merged-part id for a checkpoint tensor name."""
    aliases = getattr(model, "aliases", {})
    if name in aliases:
        return aliases[name], None
    for ckpt_name, (ours, part) in getattr(model, "packed_modules", {}).items():
        if f".{ckpt_name}." in name:
            return name.replace(f".{ckpt_name}.", f".{ours}."), part
    return name, None


def _tensors(files: list[Path]) -> Iterator[tuple[str, object]]:
    for path in files:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for name in f.keys():
                    yield name, f.get_slice(name)
        except (OSError, SafetensorError) as e:
            raise SpecError(f"model: cannot read {path} ({e}); re-download the checkpoint") from None


def load_weights(model: nn.Module, folder: str | Path) -> None:
    """Fill every parameter of `model` from the checkpoint in `folder`; missing tensors are an error."""
    params = dict(model.named_parameters())  # a tied LM head appears once, under the embedding's name
    shard = getattr(model, "shard", None)
    partial = shard is not None and not shard.is_whole  # a stage or TP rank: other tensors are not ours
    loaded: set[str] = set()
    for name, src in _tensors(checkpoint_files(Path(folder))):
        target, part = _target(model, name)
        param = params.get(target)
        if param is None:
            if name.endswith(SKIPPED_SUFFIXES) or name.startswith("lm_head.") or partial:
                continue  # a tied head saved anyway, a buffer, or another stage's tensor
            raise SpecError(f"model: checkpoint tensor {name!r} has no place in the model; check its config.json")
        loader = param.weight_loader
        try:
            loader(param, src, part)
        except RuntimeError as e:
            raise SpecError(f"model: tensor {name!r} does not fit ({e}); config.json and weights disagree") from None
        loaded.add(target)
    missing = sorted(set(params) - loaded)
    if missing:
        raise SpecError(f"model: checkpoint lacks {missing[0]!r} ({len(missing)} tensors missing); re-download it")
