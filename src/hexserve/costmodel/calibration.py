"""Efficiency factors and fixed per-call costs that turn peak numbers into achievable ones.

The defaults live in `default_calibration.json` beside this file (docs/cost-model.md gives the source of
each); `hexserve profile` writes a file of the same shape measured on a real device. A file names a
"default" entry and optional per-device-type entries that override some of its fields.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from hexserve.errors import SpecError
from hexserve.specs.files import read_json

DEFAULT_PATH = Path(__file__).with_name("default_calibration.json")


@dataclass(frozen=True)
class Efficiency:
    matmul: float  # fraction of peak TFLOPS reached by large GEMMs
    attention: float  # fraction of peak TFLOPS reached by attention (FlashAttention-style kernels)
    memory: float  # fraction of peak memory bandwidth reached by streaming reads
    link: float  # fraction of a link's peak bandwidth reached by a collective or a send
    kernel_s: float  # fixed time of one kernel: launch and tail, paid however small the work
    allreduce_s: float  # fixed time of one all-reduce call beside its bandwidth term
    p2p_s: float  # fixed time of one point-to-point send
    step_s: float  # fixed time of one engine step: scheduling, sampling, host work
    memory_utilization: float  # fraction of device memory the engine may use (the rest is reserve)


@dataclass(frozen=True)
class Calibration:
    default: Efficiency
    per_type: dict[str, Efficiency]
    source: str = "built-in defaults"

    def for_type(self, type_name: str) -> Efficiency:
        return self.per_type.get(type_name, self.default)


def _efficiency(entry: object, base: Efficiency | None, where: str) -> Efficiency:
    if not isinstance(entry, dict):
        raise SpecError(f"{where}: expected an object of efficiency factors")
    names = {f.name for f in fields(Efficiency)}
    unknown = sorted(set(entry) - names)
    if unknown:
        raise SpecError(f"{where}.{unknown[0]}: unknown factor; known factors: {', '.join(sorted(names))}")
    for key, value in entry.items():
        if not isinstance(value, int | float) or value < 0:
            raise SpecError(f"{where}.{key}: must be a number >= 0 (got {value!r})")
        bounded = key in {"matmul", "attention", "memory", "link", "memory_utilization"}
        if bounded and not 0 < value <= 1:
            raise SpecError(f"{where}.{key}: must be a fraction in (0, 1] (got {value!r})")
    if base is None:
        missing = sorted(names - set(entry))
        if missing:
            raise SpecError(f"{where}.{missing[0]}: missing; the default entry must give every factor")
        return Efficiency(**entry)
    return replace(base, **entry)


def load_calibration(path: str | Path | None = None) -> Calibration:
    """The calibration in a JSON file; the built-in defaults first, so a file may give only a few fields."""
    builtin = json.loads(DEFAULT_PATH.read_text())
    default = _efficiency(builtin["default"], None, "default")
    per_type = {k: _efficiency(v, default, f"devices.{k}") for k, v in builtin.get("devices", {}).items()}
    if path is None:
        return Calibration(default, per_type)
    data = read_json(path)
    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected an object with 'default' and/or 'devices'")
    default = _efficiency(data.get("default", {}), default, f"{path}: default")
    for name, entry in data.get("devices", {}).items():
        per_type[name] = _efficiency(entry, per_type.get(name, default), f"{path}: devices.{name}")
    return Calibration(default, per_type, source=str(path))
