"""Imports go down the flow only (docs/architecture.md, "Layers"). Layers of src/hexserve, bottom up:
specs < costmodel < planner < sim | runtime < server < bench/cli; errors.py sits beside them all.

Every import statement counts, also those inside functions or under TYPE_CHECKING: a lazy import of a
higher layer still ties the lower one to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hexserve

SRC = Path(__file__).resolve().parents[1] / "src"

# layer -> the layers it must never import (directly). sim and runtime are siblings: the simulator models
# the engine, it does not run it. bench is an HTTP client, so it needs none of the engine's layers.
NEVER = {
    "errors": {"specs", "costmodel", "planner", "sim", "runtime", "server", "bench", "cli"},
    "specs": {"costmodel", "planner", "sim", "runtime", "server", "bench", "cli"},
    "costmodel": {"planner", "sim", "runtime", "server", "bench", "cli"},
    "planner": {"sim", "runtime", "server", "bench", "cli"},
    "sim": {"runtime", "server", "bench", "cli"},
    "runtime": {"sim", "server", "bench", "cli"},
    "server": {"sim", "bench", "cli"},
    "bench": {"runtime", "server", "sim", "planner", "cli"},
}


def layer(name: str) -> str:
    """The layer of a module or file directly under hexserve/: its package, or `cli` for the commands."""
    name = name.removesuffix(".py")
    return "cli" if name.startswith("cli") or name == "demo" else name


def imported_layers(source: str, path: str) -> list[tuple[str, int]]:
    """(layer, line) of each hexserve import in `source`, the text of the file at `path` under src/
    ("hexserve/planner/plan.py")."""
    package = Path(path).parent.parts  # ("hexserve", "planner"): what a relative import starts from
    found = []
    for node in ast.walk(ast.parse(source, path)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else ()
            module = ".".join(base + ((node.module,) if node.module else ()))
            if module == "hexserve":
                # `from hexserve import runtime`, `from .. import sim`: the names are the modules; the
                # package's lazy names (LLM, SamplingParams) stand for the modules they load.
                names = [hexserve._LAZY.get(a.name, f"hexserve.{a.name}") for a in node.names]
            else:
                names = [module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "hexserve" and len(parts) > 1:
                found.append((layer(parts[1]), node.lineno))
    return sorted(found, key=lambda f: f[1])  # ast.walk goes breadth first: back to the file's order


def forbidden_imports(source: str, path: str) -> list[str]:
    """`path:line: me imports other` for each import in `source` of a layer that `path`'s must not import."""
    me = layer(Path(path).parts[1])
    return [f"{path}:{line}: {me} imports {other}" for other, line in imported_layers(source, path)
            if other in NEVER.get(me, ())]


def test_no_layer_imports_one_above_it():
    files = sorted((SRC / "hexserve").rglob("*.py"))
    checked = {layer(f.relative_to(SRC).parts[1]) for f in files}
    assert set(NEVER) <= checked, f"no files of layers {set(NEVER) - checked} under {SRC}: did the tree move?"
    bad = [b for f in files for b in forbidden_imports(f.read_text(), f.relative_to(SRC).as_posix())]
    for b in bad:
        print(b)
    assert not bad, f"{len(bad)} forbidden imports:\n" + "\n".join(bad)


def test_checker_flags_forbidden_imports():
    bad = forbidden_imports(
        "from hexserve.specs import gpus\n"  # down: allowed
        "import hexserve.runtime.engine\n"
        "def f():\n"
        "    from ..sim import replay\n"  # relative, inside a function
        "from .. import server\n"
        "from hexserve import LLM\n"  # lazy name: loads the runtime
        "from . import stage\n",  # its own layer
        "hexserve/costmodel/bad.py",
    )
    assert bad == [
        "hexserve/costmodel/bad.py:2: costmodel imports runtime",
        "hexserve/costmodel/bad.py:4: costmodel imports sim",
        "hexserve/costmodel/bad.py:5: costmodel imports server",
        "hexserve/costmodel/bad.py:6: costmodel imports runtime",
    ]


def test_checker_resolves_package_init_and_commands():
    # A package's __init__ is in the package: `from .x` there is a sibling, not the parent's.
    assert forbidden_imports("from .gpus import GPUS\n", "hexserve/specs/__init__.py") == []
    assert forbidden_imports("from hexserve.cli_args import common\n", "hexserve/server/app.py") == [
        "hexserve/server/app.py:1: server imports cli"
    ]
    assert forbidden_imports("from hexserve.specs import gpus\n", "hexserve/errors.py") == [
        "hexserve/errors.py:1: errors imports specs"
    ]
