"""Faults in a disaggregated plan: a prefill replica and a decode replica die while requests are being
prefilled and handed over; every request still finishes on the replicas left, with transformers' greedy
tokens (its prompt and tokens so far computed again), and no block stays taken."""

from __future__ import annotations

import os
import signal

import pytest

from checkpoints import build, prompts, reference_greedy
from hexserve.planner.plan import Plan, Replica, Stage, cluster_fingerprint, model_fingerprint
from hexserve.planner.workload import Workload
from hexserve.runtime.config import load_config
from hexserve.runtime.engine import LLM
from hexserve.runtime.sampling import SamplingParams
from hexserve.specs.cluster import parse_cluster

CPUS = {"type": "cpu", "count": 4, "memory_gib": 4, "mem_bandwidth_gbps": 5.5, "tflops": 0.075}
CLUSTER = parse_cluster({"name": "four-cpus", "nodes": [{"name": "localhost", "gpus": [CPUS]}]}, "test")


def two_by_two(folder) -> Plan:
    """Prefill replicas on devices 0 and 1, decode replicas on devices 2 and 3, every route open."""
    spec = load_config(folder).spec
    one = (Stage((0,), 1, (0, 2)),)
    replicas = tuple(Replica(role, tuple(Stage((d,), 1, s.layers) for s in one), 0.5)
                     for role, d in (("prefill", 0), ("prefill", 1), ("decode", 2), ("decode", 3)))
    return Plan(spec.name, model_fingerprint(spec), CLUSTER.name, cluster_fingerprint(CLUSTER), Workload(), replicas)


def kill(llm: LLM, replica: int) -> None:
    os.kill(llm.replicas[replica].executor.workers[0].process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_lost_prefill_and_decode_replicas_requests_finish_on_the_others(tmp_path):
    folder = tmp_path / "llama"
    model = build("llama", folder)
    batch = prompts([5, 17, 9, 30, 3, 12, 8, 20])
    params = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
    llm = LLM(str(folder), plan=two_by_two(folder), cluster=CLUSTER, dtype="float32", block_size=4, max_num_seqs=8,
              step_timeout_s=30)
    processes = [w.process for r in llm.replicas for w in r.executor.workers]
    try:
        requests = [llm.add_request(p, params) for p in batch]
        assert sorted({r.seq.replica for r in requests}) == [0, 1]  # both prefill replicas have work
        llm.step()  # prompts out (their first tokens may be back): handoffs now start from both
        kill(llm, 0)  # a prefill replica, with requests prefilled or being handed over
        kill(llm, 2)  # a decode replica, its transfers in flight
        while llm.has_work():
            llm.step()
        for prompt, request in zip(batch, requests, strict=True):
            out = llm.output(request)
            assert out.error is None and out.finish_reason == "length", out
            assert out.token_ids == reference_greedy(model, prompt, 40)
            assert request.seq.replica == 3  # the one decode replica left
        assert [r.error is not None for r in llm.replicas] == [True, False, True, False]
        assert all(r.num_free_blocks == r.num_blocks for r in llm.replicas if not r.error)
        assert llm.stats().replicas_failed == 2
    finally:
        llm.shutdown()
    assert not any(p.is_alive() for p in processes)
