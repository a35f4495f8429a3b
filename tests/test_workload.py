"""Workloads from the shipped Azure trace and from users' CSV/JSONL files."""

import json

import pytest

from hexserve.errors import SpecError
from hexserve.specs.workload import CLASSES, Request, load_workload, read_trace


@pytest.fixture(scope="module")
def azure():
    return load_workload("azure-conv")


def test_azure_trace_matches_its_published_statistics(azure):
    assert len(azure.requests) == 19_366
    assert azure.duration_s == pytest.approx(3_502, abs=1)
    assert azure.rate == pytest.approx(5.53, abs=0.01)
    assert azure.mean_prompt_len == pytest.approx(1_155, abs=1)
    assert azure.mean_output_len == pytest.approx(211, abs=1)
    arrivals = [r.arrival_s for r in azure.requests]
    assert arrivals[0] == 0 and arrivals == sorted(arrivals)


def test_classes_partition_the_trace(azure):
    shares = azure.class_shares()
    assert shares["HPHD"] == pytest.approx(0.394, abs=0.002) and shares["HPLD"] == pytest.approx(0.212, abs=0.002)
    parts = [load_workload(f"azure-conv:{c}") for c in CLASSES]
    assert sum(len(p.requests) for p in parts) == len(azure.requests)
    hpld = load_workload("azure-conv:hpld")
    assert hpld.name == "azure-conv:HPLD"
    assert all(r.prompt_len > 512 and r.output_len <= 128 for r in hpld.requests)


def test_classes_at_the_thresholds():
    assert Request(0, 512, 128).klass == "LPLD" and Request(0, 513, 129).klass == "HPHD"


def test_arrival_transforms(azure):
    some = azure.sample(500, seed=1)
    assert len(some.requests) == 500 and some.sample(500) is some
    poisson = some.with_poisson_arrivals(10.0, seed=3)
    assert poisson.rate == pytest.approx(10.0, rel=0.15)
    assert [r.prompt_len for r in poisson.requests] == [r.prompt_len for r in some.requests]
    assert poisson.with_poisson_arrivals(10.0, seed=3) == poisson.with_poisson_arrivals(10.0, seed=3)
    assert all(r.arrival_s == 0 for r in some.offline().requests)
    with pytest.raises(SpecError, match="rate: must be > 0"):
        some.with_poisson_arrivals(0)


def test_sampling_a_class_up_to_a_long_run():
    lpld = load_workload("azure-conv:LPLD")
    many = lpld.sample(8_000, seed=2, with_replacement=True, keep_order=False)
    assert len(many.requests) == 8_000 > len(lpld.requests)
    assert all(r.klass == "LPLD" and r.arrival_s == 0 for r in many.requests)
    assert many == lpld.sample(8_000, seed=2, with_replacement=True, keep_order=False)
    assert lpld.sample(8_000, seed=2) is lpld  # without replacement: all of them
    shuffled = [r.prompt_len for r in lpld.sample(1_000, seed=2, keep_order=False).requests]
    in_order = [r.prompt_len for r in lpld.sample(1_000, seed=2).requests]
    assert shuffled != in_order and sorted(shuffled) == sorted(in_order)  # the same draw, in random order


def test_user_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "mine.csv"
    csv_path.write_text("prompt_len,output_len,arrival_s\n100,20,5.0\n700,300,2.5\n")
    w = read_trace(csv_path)
    assert [(r.arrival_s, r.prompt_len) for r in w.requests] == [(0.0, 700), (2.5, 100)]
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(json.dumps({"prompt_tokens": 50, "output_tokens": 5}) + "\n\n")
    assert load_workload(str(jsonl)).requests == (Request(0.0, 50, 5),)
    assert load_workload(f"{csv_path}:HPHD").requests == (Request(0.0, 700, 300),)


@pytest.mark.parametrize("content,message", [
    ("prompt,out\n1,2\n", "needs a prompt length"),
    ("prompt_len,output_len\n10,0\n", "must be > 0 tokens"),
    ("prompt_len,output_len\nten,3\n", "cannot read a number"),
    ("prompt_len,output_len\n", "no requests"),
])
def test_bad_trace_files(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(SpecError, match=message):
        read_trace(path)


def test_unknown_names():
    with pytest.raises(SpecError, match="workload class 'heavy' is unknown; use one of HPHD"):
        load_workload("azure-conv:heavy")
    with pytest.raises(SpecError, match="no file 'nope.csv'"):
        load_workload("nope.csv")
