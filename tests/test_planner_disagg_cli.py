"""`hexserve plan --mode disaggregated|auto`, `--workload`, `--draw`: outputs and one-line errors."""

import json

import pytest
import yaml

from hexserve.cli import main
from hexserve.planner.plan import load_plan
from test_planner_disagg import SMALL  # the same two-node cluster as the planner tests


@pytest.fixture(scope="module")
def cluster_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("c") / "small.yaml"
    path.write_text(yaml.safe_dump(SMALL))
    return str(path)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--workload", "XXLD"], "unknown class"),
        (["--workload", "HPLD", "--prompt-len", "100"], "not both"),
        (["--mode", "split"], "unknown mode"),
        (["--mode", "disaggregated", "--objective", "latency"], "maximises throughput"),
        (["--mode", "disaggregated", "--time-budget", "0"], "must be > 0"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, cluster_file, extra, message):
    code = main(["plan", "--cluster", cluster_file, "--model", "llama-2-13b", *extra])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1


def test_nothing_fits_is_one_line(capsys):
    code = main(["plan", "--cluster", "cpu-local", "--model", "llama-2-70b", "--mode", "disaggregated"])
    _, err = capsys.readouterr()
    assert code == 2 and "no disaggregated plan" in err and err.count("\n") == 1


def test_disaggregated_plan_file_and_picture(capsys, cluster_file, tmp_path):
    out, png = tmp_path / "p.json", tmp_path / "p.png"
    argv = ["plan", "--cluster", cluster_file, "--model", "llama-2-13b", "--workload", "HPLD",
            "--mode", "disaggregated", "--out", str(out), "--draw", str(png)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "routing (prefill -> decode" in text and "planner log" in text
    plan = load_plan(out)
    assert (plan.workload.prompt_len, plan.workload.output_len) == (2606, 72)
    assert {r.role for r in plan.replicas} == {"prefill", "decode"} and plan.routing
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plan", "--explain", str(out), "--cluster", cluster_file]) == 0


def test_auto_says_why(capsys, cluster_file):
    argv = ["plan", "--cluster", cluster_file, "--model", "llama-2-13b", "--workload", "LPHD", "--mode", "auto",
            "--json"]
    assert main(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert any(n.startswith("auto: kept ") and " vs " in n for n in data["notes"])
