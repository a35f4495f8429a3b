"""End to end: the embedded SmolLM2 through `hexserve generate` (converted and cached on first use)."""

from __future__ import annotations

import json

import pytest
import torch

from hexserve.cli import main

torch.set_num_threads(2)


@pytest.mark.slow
def test_generate_smollm2_answers_paris(capsys):
    assert main(["generate", "--model", "smollm2", "--chat", "--max-tokens", "24", "--json",
                 "--prompt", "What is the capital of France?"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "Paris" in out["text"] and out["finish_reason"] == "stop"


@pytest.mark.slow
def test_generate_bad_model_is_one_line_error(capsys, tmp_path):
    assert main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a folder" in err and "\n" not in err
