"""`hexserve profile`: real measurements on this CPU become a calibration file the cost model reads."""

import json

import pytest

from hexserve.cli import main
from hexserve.costmodel.calibration import load_calibration
from hexserve.costmodel.profile import Measured, calibration_entry, device_type_of


def gpu(name: str) -> Measured:
    return Measured(name, 1, "float16", matmul_tflops=700, attention_tflops=400, memory_gbps=3000, kernel_s=3e-6)


@pytest.mark.parametrize("driver_name,type_name", [
    ("NVIDIA H100 80GB HBM3", "H100-SXM"),
    ("NVIDIA H200", "H200-SXM"),
    ("NVIDIA A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA A100-PCIE-40GB", "A100-40GB"),
    ("NVIDIA L40S", "L40S"),
    ("NVIDIA RTX A6000", "A6000"),
])
def test_gpu_driver_names_map_to_the_catalogue(driver_name, type_name):
    assert device_type_of(gpu(driver_name)).name == type_name


def test_gpu_efficiencies_are_relative_to_the_catalogue_peak():
    entry = calibration_entry(gpu("NVIDIA H100 80GB HBM3"))
    assert entry["matmul"] == pytest.approx(700 / 989)
    assert entry["memory"] == pytest.approx(3000 / 3350)
    assert "allreduce_s" not in entry  # one GPU cannot measure a collective: the default stays


@pytest.mark.slow
def test_profile_this_cpu_writes_a_loadable_calibration(tmp_path, capsys):
    out = tmp_path / "cal.json"
    assert main(["profile", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "calibration for cpu" in printed and "declare this CPU in a cluster file" in printed
    data = json.loads(out.read_text())
    measured = data["measured"]
    assert measured["matmul_tflops"] > 0.001 and measured["memory_gbps"] > 0.5
    assert 0 < measured["kernel_s"] < 1e-3 and 0 < measured["allreduce_s"] < 0.1 and measured["link_gbps"] > 0
    cpu = load_calibration(out).for_type("cpu")
    assert cpu.kernel_s == measured["kernel_s"] and cpu.allreduce_s == measured["allreduce_s"]
    assert 0 < cpu.attention <= 1 and cpu.matmul == 1.0  # a CPU's declared peak is its measured rate
