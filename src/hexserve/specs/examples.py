"""Find the shipped examples (clusters, model configs) by short name."""

from __future__ import annotations

from pathlib import Path


def examples_dir() -> Path:
    """The examples folder: the checkout's (editable install) or the copy inside the wheel."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package.parent.parent / "examples", package / "_examples"):
        if candidate.is_dir():
            return candidate
    return package / "_examples"


def data_dir() -> Path:
    """The shipped data (traces): the checkout's `data/` or the copy inside the wheel."""
    package = Path(__file__).resolve().parent.parent
    checkout = package.parent.parent / "data"
    return checkout if checkout.is_dir() else package / "_data"


def example_names(kind: str) -> list[str]:
    """Short names of the shipped examples of one kind ("clusters" or "models")."""
    folder = examples_dir() / kind
    if not folder.is_dir():
        return []
    dirs = [p.name for p in folder.iterdir() if p.is_dir()]
    return sorted(dirs + [p.stem for p in folder.glob("*.yaml")])
