"""Reading a user's JSON or YAML file, with one-line errors that point at the broken spot."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from hexserve.errors import SpecError


def read_json(path: str | Path) -> object:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file; check the path") from None
    except json.JSONDecodeError as e:
        where = f"line {e.lineno}, column {e.colno}"
        raise SpecError(f"{path}: malformed JSON at {where}; fix the syntax ({e.msg})") from None


def read_yaml(path: str | Path) -> object:
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file; check the path") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path}: malformed YAML{where}; fix the syntax ({getattr(e, 'problem', e)})") from None
