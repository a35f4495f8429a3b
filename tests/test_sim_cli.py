"""`hexserve simulate`: a run, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from hexserve.cli import main
from hexserve.sim.arrivals import parse_rate


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sim") / "plan.json"
    assert main(["plan", "--cluster", "h100x8", "--model", "llama-2-7b", "--workload", "LPLD", "--out", str(path)]) == 0
    return str(path)


def test_simulate_json(plan_file, capsys):
    capsys.readouterr()
    rc = main(["simulate", "--plan", plan_file, "--workload", "azure-conv:LPLD", "--rate", "0.5peak",
               "--num-requests", "200", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["completed"] == 200 and out["requests_per_s"] > 0 and "1.0" in out["attainment"]


@pytest.mark.parametrize("args, message", [
    (["--rate", "0"], "--rate: must be > 0"),
    (["--workload", "azure-conv:XXLD"], "unknown"),
    (["--cluster", "hetero-1"], "cluster_fingerprint"),
    (["--rate", "fast"], "is not a rate"),
])
def test_bad_input_is_one_line_exit_2(plan_file, capsys, args, message):
    rc = main(["simulate", "--plan", plan_file, "--num-requests", "10", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and message in err and "\n" not in err


def test_rate_forms():
    assert parse_rate("0.75peak").kind == "peak" and parse_rate("0.75peak").value == 0.75
    assert parse_rate("inf").kind == "offline" and parse_rate("trace").kind == "trace"
    assert parse_rate("2.5").value == 2.5
