"""Workloads: requests with prompt and output lengths and arrival times, read from real traces.

The Azure LLM inference trace (conversation service, 2023; CC-BY, data/traces/) is shipped and has
the short name `azure-conv`; `azure-conv:HPLD` keeps one of HexGen-2's four classes (a prompt over 512
tokens is heavy, an output over 128 tokens is heavy). Any CSV or JSONL with prompt and output lengths
(and optionally arrival times) works the same way by its path.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import numpy as np

from hexserve.errors import SpecError
from hexserve.specs.examples import data_dir

HEAVY_PROMPT = 512  # tokens; a longer prompt is "heavy prefill" (HexGen-2)
HEAVY_OUTPUT = 128  # tokens; a longer output is "heavy decode"
CLASSES = ("HPHD", "HPLD", "LPHD", "LPLD")
SHIPPED = {"azure-conv": "traces/azure_llm_2023_conv.csv"}

_PROMPT_KEYS = ("ContextTokens", "prompt_len", "prompt_tokens", "input_tokens", "input_len")
_OUTPUT_KEYS = ("GeneratedTokens", "output_len", "output_tokens", "max_tokens")
_ARRIVAL_KEYS = ("TIMESTAMP", "arrival_s", "arrival", "timestamp")


@dataclass(frozen=True)
class Request:
    arrival_s: float  # seconds from the workload's start
    prompt_len: int
    output_len: int

    @property
    def klass(self) -> str:
        prefill = "HP" if self.prompt_len > HEAVY_PROMPT else "LP"
        decode = "HD" if self.output_len > HEAVY_OUTPUT else "LD"
        return prefill + decode


@dataclass(frozen=True)
class Workload:
    name: str
    requests: tuple[Request, ...]  # in arrival order

    @property
    def mean_prompt_len(self) -> float:
        return float(np.mean([r.prompt_len for r in self.requests]))

    @property
    def mean_output_len(self) -> float:
        return float(np.mean([r.output_len for r in self.requests]))

    @property
    def duration_s(self) -> float:
        return self.requests[-1].arrival_s - self.requests[0].arrival_s if self.requests else 0.0

    @property
    def rate(self) -> float:
        """Mean arrivals per second (inf for an offline batch)."""
        return (len(self.requests) - 1) / self.duration_s if self.duration_s > 0 else float("inf")

    def of_class(self, klass: str) -> Workload:
        if klass.upper() not in CLASSES:
            raise SpecError(f"workload class {klass!r} is unknown; use one of {', '.join(CLASSES)}")
        kept = tuple(r for r in self.requests if r.klass == klass.upper())
        return Workload(f"{self.name}:{klass.upper()}", kept)

    def head(self, n: int) -> Workload:
        return Workload(self.name, self.requests[:n])

    def sample(self, n: int, seed: int = 0, with_replacement: bool = False, keep_order: bool = True) -> Workload:
        """n requests drawn without replacement, kept in arrival order. With fewer than n requests: all of
        them, or with `with_replacement`, n drawn with replacement (a class of the trace scaled up to a
        long run). With `keep_order=False` they come in the order drawn, every arrival at 0 (give them
        arrivals with `offline` or `with_poisson_arrivals`): lengths independent of time, where the
        trace's drift over the day would otherwise show up in a long run as a trend."""
        many = with_replacement and n > len(self.requests)
        if n >= len(self.requests) and not many and keep_order:
            return self
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(self.requests), size=n if many else min(n, len(self.requests)), replace=many)
        if keep_order:
            return Workload(self.name, tuple(self.requests[i] for i in np.sort(picked)))
        return Workload(self.name, tuple(replace(self.requests[i], arrival_s=0.0) for i in picked))

    def with_poisson_arrivals(self, rate: float, seed: int = 0) -> Workload:
        """The same requests arriving as a Poisson process of `rate` requests per second."""
        if not rate > 0:
            raise SpecError(f"rate: must be > 0 requests per second (got {rate})")
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=len(self.requests))
        times = np.cumsum(gaps) - gaps[0]
        moved = (replace(r, arrival_s=float(t)) for r, t in zip(self.requests, times, strict=True))
        return Workload(self.name, tuple(moved))

    def offline(self) -> Workload:
        """Every request present at time 0 (throughput runs)."""
        return Workload(self.name, tuple(replace(r, arrival_s=0.0) for r in self.requests))

    def class_shares(self) -> dict[str, float]:
        n = max(1, len(self.requests))
        return {k: sum(r.klass == k for r in self.requests) / n for k in CLASSES}


# ----------------------------------------------------------------------------- reading files


def _pick(row: dict, keys: tuple[str, ...]) -> object:
    return next((row[k] for k in keys if k in row and row[k] not in (None, "")), None)


def _arrival_seconds(value: object) -> float:
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    try:
        return float(text)
    except ValueError:
        # Azure timestamps carry 7 fractional digits; datetime takes at most 6.
        head, _, frac = text.partition(".")
        return datetime.fromisoformat(f"{head}.{frac[:6]}" if frac else head).timestamp()


def _request(row: dict, where: str) -> tuple[float | None, int, int]:
    prompt, output = _pick(row, _PROMPT_KEYS), _pick(row, _OUTPUT_KEYS)
    if prompt is None or output is None:
        raise SpecError(
            f"{where}: needs a prompt length ({' or '.join(_PROMPT_KEYS[:2])}) and an output length "
            f"({' or '.join(_OUTPUT_KEYS[:2])}); got fields {', '.join(row)}"
        )
    try:
        prompt_len, output_len = int(float(prompt)), int(float(output))
        arrival = _pick(row, _ARRIVAL_KEYS)
        arrival_s = None if arrival is None else _arrival_seconds(arrival)
    except ValueError as e:
        raise SpecError(f"{where}: cannot read a number ({e}); lengths are token counts, arrivals seconds") from None
    if prompt_len <= 0 or output_len <= 0:
        raise SpecError(f"{where}: prompt and output lengths must be > 0 tokens (got {prompt_len}, {output_len})")
    return arrival_s, prompt_len, output_len


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        rows = []
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SpecError(f"{path}:{i}: malformed JSON line ({e.msg}); one object per line") from None
        return rows
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def read_trace(path: str | Path, name: str | None = None) -> Workload:
    """Requests from a CSV (the Azure trace's columns or prompt_len/output_len[/arrival_s]) or JSONL file.
    Without arrival times the requests all arrive at time 0."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"workload: no file {str(path)!r}; give a CSV/JSONL path or one of {', '.join(SHIPPED)}")
    parsed = [_request(row, f"{path}, request {i}") for i, row in enumerate(_rows(path), start=1)]
    if not parsed:
        raise SpecError(f"{path}: no requests in the file")
    start = min((a for a, _, _ in parsed if a is not None), default=0.0)
    requests = sorted(
        (Request((a - start) if a is not None else 0.0, p, o) for a, p, o in parsed), key=lambda r: r.arrival_s
    )
    return Workload(name or path.stem, tuple(requests))


def load_workload(spec: str) -> Workload:
    """`azure-conv`, `azure-conv:HPLD`, a path, or `path:CLASS`."""
    source, klass = spec, ""
    head, sep, tail = spec.rpartition(":")
    if sep and (tail.upper() in CLASSES or head in SHIPPED):
        source, klass = head, tail
    if source in SHIPPED:
        workload = read_trace(data_dir() / SHIPPED[source], name=source)
    else:
        workload = read_trace(source)
    return workload.of_class(klass) if klass else workload
