"""The benchmark client's pieces without a server: request building, prompt lengths, the report's maths."""

from __future__ import annotations

import random

import pytest

from hexserve.bench.client import RequestInput, RequestResult, payload
from hexserve.bench.metrics import compute
from hexserve.bench.prompts import synthetic_prompt
from hexserve.bench.run import build_requests, completions_url
from hexserve.cli import main


def test_synthetic_prompt_has_one_token_per_word():
    from transformers import AutoTokenizer

    from hexserve.runtime.smollm2 import ensure_checkpoint

    tok = AutoTokenizer.from_pretrained(str(ensure_checkpoint()))
    for n in (1, 17, 300):
        assert len(tok(synthetic_prompt(n, random.Random(n)), add_special_tokens=False)["input_ids"]) == n


def test_build_requests_scales_filters_and_spaces_arrivals():
    inputs, times = build_requests("azure-conv", 20, seed=3, scale=0.1, max_model_len=300, rate=2.0)
    assert len(inputs) == 20 and all(r.prompt_len + r.output_len < 300 for r in inputs)
    assert times[0] == 0 and times == sorted(times) and 2 < times[-1] < 30  # ~19 gaps of 0.5 s
    again, _ = build_requests("azure-conv", 20, seed=3, scale=0.1, max_model_len=300, rate=2.0)
    assert [r.prompt for r in again] == [r.prompt for r in inputs]  # seeded
    _, at_once = build_requests("azure-conv", 5, seed=0)
    assert at_once == [0.0] * 5


def test_payload_and_url_follow_vllm_benchmark_conventions():
    body = payload("m", RequestInput("hi", 1, 7))
    assert body["max_tokens"] == 7 and body["ignore_eos"] and body["stream"]
    assert body["stream_options"] == {"include_usage": True}
    assert completions_url("http://h:1/v1/") == completions_url("http://h:1") == "http://h:1/v1/completions"


def test_metrics_like_benchmark_serving():
    inputs = [RequestInput("x", 10, 4), RequestInput("y", 20, 1), RequestInput("z", 5, 3)]
    results = [RequestResult(True, ttft=0.1, latency=0.4, itl=[0.1] * 3, prompt_tokens=10, output_tokens=4),
               RequestResult(True, ttft=0.2, latency=0.2, itl=[], prompt_tokens=21, output_tokens=1),
               RequestResult(False, error="HTTP 500")]
    m = compute(inputs, results, duration_s=2.0)
    assert (m.completed, m.failed, m.total_input_tokens, m.total_output_tokens) == (2, 1, 31, 5)
    assert m.request_throughput == 1.0 and m.output_throughput == 2.5
    assert m.tpot_ms.mean == pytest.approx(100.0)  # (0.4 - 0.1) / 3, only requests with > 1 token
    assert m.ttft_ms.mean == pytest.approx(150.0) and m.itl_ms.median == pytest.approx(100.0)
    assert m.prompt_token_error == pytest.approx(0.025)


def test_bench_against_nothing_is_a_one_line_error(capsys):
    assert main(["bench", "--endpoint", "http://127.0.0.1:9", "--model", "m", "--num-requests", "2",
                 "--scale", "0.05", "--no-progress", "--timeout", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert "every request failed" in err and "\n" not in err
    with pytest.raises(SystemExit):
        main(["bench", "--endpoint", "x", "--model", "m", "--rate", "0"])
