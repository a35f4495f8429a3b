"""The `hexserve` command as a user runs it: output, JSON fields, exit codes and one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hexserve.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_json_has_the_promised_fields(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama-2-70b", "--gpus", "8xh100", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["params"] == 68_976_648_192
    assert data["weights_bytes"] == 2 * 68_976_648_192
    assert data["kv_bytes_per_token"] == 327_680
    assert len(data["devices"]) == 8
    for d in data["devices"]:
        assert d["fits"] is True and d["tp"] == 8 and d["layers"] == [0, 80]
        assert d["memory_used_bytes"] < d["memory_usable_bytes"] and d["max_kv_tokens"] > 1_000_000
        assert d["prefill_ms"] > 0 and d["decode_step_ms"] > 0


def test_estimate_table_mixed_gpus(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama-2-70b", "--gpus", "2xa100-80gb,1xl40")
    assert code == 0
    assert "A100-80GB" in out and "L40" in out and "fits: yes" in out
    assert "decode step at batch 32 x context 1024" in out


def test_estimate_says_what_is_short(capsys):
    code, out, _ = run(capsys, "estimate", "--model", "llama-2-70b", "--cluster", "hexgen-case", "--tp", "8")
    assert code == 0
    assert "does not fit: workstation/6 (A4000) is short by" in out


def test_cluster_command_shows_links_and_price(capsys):
    code, out, _ = run(capsys, "cluster", "hetero-5")
    assert code == 0 and "$29.44/h" in out and "site1-a100 <-> site1-h100: ib-ndr" in out
    code, out, _ = run(capsys, "cluster", "hexgen-case", "--json")
    assert len(json.loads(out)["edges"]) == 28


@pytest.mark.parametrize("argv,message", [
    (["estimate", "--model", "llama-2-70b", "--gpus", "8xh1000"], "--gpus: unknown device type 'h1000'"),
    (["estimate", "--model", "gpt-9", "--gpus", "8xh100"], "model: no config.json at 'gpt-9'"),
    (["estimate", "--model", "llama-2-70b", "--gpus", "8xh100", "--tp", "3"], "--tp: llama-2-70b cannot be split 3"),
    (["estimate", "--model", "llama-2-70b", "--gpus", "6xh100", "--tp", "4"], "--tp: 6 devices do not split"),
    (["estimate", "--model", "llama-2-70b"], "give exactly one of --gpus"),
    (["estimate", "--model", "llama-2-70b", "--cluster", "nowhere.yaml"], "cluster: no file 'nowhere.yaml'"),
    (["cluster", "nowhere"], "cluster: no file 'nowhere'"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_flag_value_exits_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["estimate", "--model", "llama-2-70b", "--gpus", "8xh100", "--batch", "-1"])
    assert info.value.code == 2
    assert "--batch: must be > 0" in capsys.readouterr().err


def test_console_script_and_bad_yaml(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes: [\n")
    script = Path(sys.executable).parent / "hexserve"  # the console script pip installed
    proc = subprocess.run([str(script), "cluster", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "malformed YAML at line" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_demo_runs(capsys, tmp_path, monkeypatch):
    from hexserve.demo import main as demo

    monkeypatch.chdir(tmp_path)
    assert demo() == 0
    assert (tmp_path / "out" / "hetero-4-llama-2-70b.json").is_file()
    out = capsys.readouterr().out
    assert "does not fit" in out and "replica 0 (colocated" in out and "Paris" in out
    assert "identical: 'The capital of France is Paris.'" in out  # the served plan's answer, checked
    assert "hetero-5" in out and "output tok/s" in out


def test_demo_fails_loudly_when_the_plan_answers_differently(monkeypatch, capsys):
    import hexserve.demo as demo

    monkeypatch.setattr(demo, "single_process_answer", lambda: "The capital of France is Paris.")
    demo.verify("The capital of France is Paris.")
    monkeypatch.setattr(demo, "run", lambda: demo.verify("L'Étoile, la Marseillaise"))
    assert demo.main() == 1
    assert "MISMATCH: the served plan answered \"L'Étoile, la Marseillaise\"" in capsys.readouterr().err
