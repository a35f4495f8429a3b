"""Finding a checkpoint folder by name and loading its tokenizer."""

from __future__ import annotations

from pathlib import Path

from hexserve.errors import SpecError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
SMOLLM2_NAMES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")


def resolve_checkpoint(model: str | Path) -> Path:
    """A Hugging Face checkpoint folder, or the embedded default for "smollm2"."""
    if str(model).lower() in SMOLLM2_NAMES:
        from hexserve.runtime.smollm2 import ensure_checkpoint

        return ensure_checkpoint()
    folder = Path(model)
    if not folder.is_dir():
        raise SpecError(f"model: {str(model)!r} is not a folder; give a Hugging Face checkpoint folder or 'smollm2'")
    return folder


def load_tokenizer(folder: Path):
    """The checkpoint's tokenizer, or None when it ships none (then prompts must be token ids)."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return None
    from transformers import AutoTokenizer  # heavy; only when a tokenizer is there

    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise SpecError(f"model: cannot load the tokenizer in {folder} ({e}); re-download its files") from None
