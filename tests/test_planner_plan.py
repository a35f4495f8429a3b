"""The plan file: JSON round trip, validation errors (one line each) and the CLI."""

import dataclasses
import json

import pytest

from hexserve.cli import main
from hexserve.costmodel.calibration import load_calibration
from hexserve.errors import SpecError
from hexserve.planner.hexgen import plan_colocated
from hexserve.planner.plan import load_plan, plan_from_json, save_plan
from hexserve.planner.validate import validate_plan
from hexserve.planner.workload import Workload
from hexserve.specs.cluster import load_cluster
from hexserve.specs.model import load_model


@pytest.fixture(scope="module")
def setting():
    model, cluster, cal = load_model("llama-2-70b"), load_cluster("hexgen-case"), load_calibration()
    # No TPOT target: the plan is HexGen's asymmetric pipeline over all eight devices (three stages).
    return plan_colocated(model, cluster, Workload(), cal), cluster, model, cal


def test_round_trip(setting, tmp_path):
    plan, cluster, model, cal = setting
    save_plan(plan, tmp_path / "p.json")
    again = load_plan(tmp_path / "p.json")
    assert again == plan
    validate_plan(again, cluster, model, cal)


def _with_stage(plan, **changes):
    replica = plan.replicas[0]
    stage = dataclasses.replace(replica.stages[0], **changes)
    stages = (stage, *replica.stages[1:])
    return dataclasses.replace(plan, replicas=(dataclasses.replace(replica, stages=stages), *plan.replicas[1:]))


def _error(plan, cluster, model, cal) -> str:
    with pytest.raises(SpecError) as e:
        validate_plan(plan, cluster, model, cal)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_validation_errors(setting):
    plan, cluster, model, cal = setting
    first = plan.replicas[0].stages[0]
    second = plan.replicas[0].stages[1]
    cases = {
        "does not exist": _with_stage(plan, devices=(99,) + first.devices[1:]),
        "already used": _with_stage(plan, devices=(second.devices[0],) + first.devices[1:]),
        "TP degree is its device count": _with_stage(plan, tp=first.tp + 1),
        "should start at layer 0": _with_stage(plan, layers=(1, first.layers[1])),
        "short by": _with_stage(plan, layers=(0, first.layers[1]), devices=first.devices[:1], tp=1),
    }
    for expected, bad in cases.items():
        assert expected in _error(bad, cluster, model, cal)
    assert "unknown role" in _error(dataclasses.replace(plan, replicas=(
        dataclasses.replace(plan.replicas[0], role="both"),)), cluster, model, cal)
    assert "another config" in _error(plan, cluster, load_model("llama-2-13b"), cal)
    assert "another cluster" in _error(plan, load_cluster("hetero-1"), model, cal)


def test_tp_must_divide_heads(setting):
    plan, cluster, model, cal = setting
    from hexserve.planner.plan import Stage

    only = dataclasses.replace(plan.replicas[0], stages=(Stage((0, 1, 2), 3, (0, model.num_layers)),), share=1.0)
    assert "does not divide" in _error(dataclasses.replace(plan, replicas=(only,)), cluster, model, cal)


def test_structure_errors():
    for data, expected in (({}, "version"), ({"version": 9}, "not supported"),
                           ({"version": 1, "workload": {}, "replicas": "x"}, "replicas")):
        with pytest.raises(SpecError, match=expected) as e:
            plan_from_json(data)
        assert "\n" not in str(e.value)


def test_cli_plans_explains_and_fails_with_one_line(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", "--cluster", "hexgen-case", "--model", "llama-2-70b", "--out", str(out)]) == 0
    assert "replica 0" in capsys.readouterr().out
    assert json.loads(out.read_text())["version"] == 1
    assert main(["plan", "--explain", str(out)]) == 0
    assert "bottleneck" in capsys.readouterr().out
    symmetric = ["--baseline", "symmetric", "--tp", "8"]
    assert main(["plan", "--cluster", "hexgen-case", "--model", "llama-2-70b", *symmetric]) == 2
    err = capsys.readouterr().err.strip()
    assert "short by" in err and "\n" not in err
    assert main(["plan", "--cluster", "no-such-cluster", "--model", "llama-2-70b"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text("{")
    assert main(["plan", "--explain", str(tmp_path / "bad.json")]) == 2
