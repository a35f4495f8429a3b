"""hexserve: serve LLMs across heterogeneous hardware.

`from hexserve import LLM, SamplingParams` loads the engine (torch, transformers) on first use only, so
`import hexserve` itself stays light for the planner and the CLI.
"""

from __future__ import annotations

__all__ = ["LLM", "SamplingParams"]

_LAZY = {"LLM": "hexserve.runtime.engine", "SamplingParams": "hexserve.runtime.sampling"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hexserve' has no attribute {name!r}")
