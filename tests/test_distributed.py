"""The distributed runtime: plans run as one worker process per device (gloo on this CPU), checked
against Hugging Face transformers in one process. The multi-process tests are marked slow and few; each
launches several layouts at once as replicas of one plan."""

from __future__ import annotations

import os
import signal
from dataclasses import replace

import pytest
import torch

from checkpoints import build, prompts, reference_greedy
from hexserve.errors import SpecError
from hexserve.planner.plan import Plan, Replica, Stage, cluster_fingerprint, load_plan, model_fingerprint
from hexserve.planner.workload import Workload
from hexserve.runtime.config import load_config
from hexserve.runtime.engine import LLM
from hexserve.runtime.launch.settings import check_plan
from hexserve.runtime.launch.topology import plan_groups, plan_workers
from hexserve.runtime.parallel import Shard
from hexserve.runtime.sampling import SamplingParams
from hexserve.runtime.tokenizer import resolve_checkpoint
from hexserve.specs.cluster import parse_cluster

torch.set_num_threads(2)
GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, logprobs=True)


# Ten CPU processes standing in for ten devices (as examples/clusters/cpu-local.yaml has four).
CPUS = {"type": "cpu", "count": 10, "memory_gib": 4, "mem_bandwidth_gbps": 5.5, "tflops": 0.075}
CLUSTER = parse_cluster({"name": "test-cpus", "nodes": [{"name": "localhost", "gpus": [CPUS]}]}, "test")


def make_plan(folder, *replicas: list[tuple[list[int], tuple[int, int]]]) -> Plan:
    """A plan for the checkpoint in `folder` on CLUSTER: replicas, each a list of stages (device ids, layer
    range); TP = number of devices."""
    spec = load_config(resolve_checkpoint(folder)).spec
    return Plan(
        model=spec.name, model_fingerprint=model_fingerprint(spec), cluster=CLUSTER.name,
        cluster_fingerprint=cluster_fingerprint(CLUSTER), workload=Workload(),
        replicas=tuple(
            Replica("colocated", tuple(Stage(tuple(d), len(d), layers) for d, layers in stages), 1 / len(replicas))
            for stages in replicas
        ),
    )


def reference_logprobs(model, prompt: list[int], tokens: list[int]) -> list[float]:
    """transformers' log-probability of each generated token (teacher-forced)."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0].float()
    rows = logits[len(prompt) - 1 : len(prompt) - 1 + len(tokens)].log_softmax(-1)
    return rows.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1).tolist()


def check_against_transformers(llm: LLM, model, batch: list[list[int]]) -> None:
    outs = llm.generate(batch, GREEDY)
    for prompt, out in zip(batch, outs, strict=True):
        assert out.error is None, out.error
        assert out.token_ids == reference_greedy(model, prompt, GREEDY.max_tokens)
        torch.testing.assert_close(out.logprobs, reference_logprobs(model, prompt, out.token_ids), atol=2e-4, rtol=1e-4)


# ------------------------------------------------------------------------------ topology (no processes)


def test_asymmetric_plan_topology_and_groups():
    plan = load_plan("examples/plans/smollm2-asym.json")
    workers = plan_workers(plan)
    assert [(w.rank, w.stage, w.tp_rank, w.layers) for w in workers] == [
        (0, 0, 0, (0, 20)), (1, 0, 1, (0, 20)), (2, 0, 2, (0, 20)), (3, 1, 0, (20, 30))]
    assert workers[0].next_ranks == (3,) and workers[3].prev_ranks == (0, 1, 2)
    assert [w.samples for w in workers] == [False, False, False, True]
    # The TP group, then every sender-receiver pair across the boundary (no leader-then-broadcast hop).
    assert plan_groups(workers) == [(0, 1, 2), (0, 3), (1, 3), (2, 3)]


def test_kv_heads_split_or_replicated():
    assert [Shard(tp_rank=r, tp_size=3).kv_piece(3) for r in range(3)] == [(0, 3), (1, 3), (2, 3)]
    # TP 4 over 2 KV heads: ranks 0,1 keep head 0 and ranks 2,3 keep head 1.
    assert [Shard(tp_rank=r, tp_size=4).kv_piece(2) for r in range(4)] == [(0, 2), (0, 2), (1, 2), (1, 2)]
    assert Shard(tp_rank=2, tp_size=3).vocab_range(320) == (214, 107)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    return folder, build("llama", folder)


def test_plan_is_validated_at_launch_as_the_planner_validates_it(llama):
    folder = llama[0]
    spec = load_config(folder).spec
    other = load_config(resolve_checkpoint("smollm2")).spec
    cases = {
        r"\[2, 2\) should start at layer 1": make_plan(folder, [([0], (0, 1)), ([1], (2, 2))]),
        "layers end at 1 but": make_plan(folder, [([0], (0, 1))]),
        "TP 3 does not divide": make_plan(folder, [([0, 1, 2], (0, 2))]),
        "device 10 does not exist": make_plan(folder, [([10], (0, 2))]),
        "made for another config": make_plan("smollm2", [([0], (0, 30))]),
    }
    for message, plan in cases.items():
        with pytest.raises(SpecError, match=message):
            check_plan(plan, spec, CLUSTER)
    with pytest.raises(SpecError, match="another cluster"):
        nine = parse_cluster({"name": "nine", "nodes": [{"name": "n", "gpus": [{**CPUS, "count": 9}]}]}, "test")
        check_plan(make_plan("smollm2", [([0], (0, 30))]), other, nine)
    with pytest.raises(SpecError, match="give its cluster file with --cluster"):
        check_plan(make_plan(folder, [([0], (0, 2))]), spec)  # "test-cpus" is no file and no shipped name
    with pytest.raises(SpecError, match="needs decode replicas too"):
        check_plan(replace(make_plan(folder, [([0], (0, 2))]),
                           replicas=(Replica("prefill", (Stage((0,), 1, (0, 2)),), 1.0),)), spec, CLUSTER)


# ------------------------------------------------------------------------------ real workers


@pytest.mark.slow
def test_llama_tp4_with_replicated_kv_heads_and_asymmetric_replica(llama):
    """Two replicas of different layouts serving one batch: TP 4 over 2 KV heads (each replicated on
    two ranks), and a TP-2 stage of layer 0 then a TP-1 stage of layer 1."""
    folder, model = llama
    plan = make_plan(folder, [([0, 1, 2, 3], (0, 2))], [([4, 5], (0, 1)), ([6], (1, 2))])
    with LLM(str(folder), dtype="float32", plan=plan, cluster=CLUSTER, block_size=4, max_num_seqs=8) as llm:
        check_against_transformers(llm, model, prompts([5, 17, 9, 30, 3, 12]))
        assert [r.num_routed for r in llm.replicas] == [3, 3]  # equal shares: the batch is split evenly


@pytest.mark.slow
def test_opt_pipeline_with_two_micro_batches(tmp_path):
    folder = tmp_path / "opt"
    model = build("opt", folder)
    plan = make_plan(folder, [([0, 1], (0, 1)), ([2], (1, 2))])
    with LLM(str(folder), dtype="float32", plan=plan, cluster=CLUSTER, block_size=4, max_num_seqs=8,
             micro_batches=2) as llm:
        check_against_transformers(llm, model, prompts([6, 21, 11, 4, 15]))
        assert len(llm.replicas[0].slots) == 2


@pytest.mark.slow
def test_smollm2_tp3_pp_and_asymmetric_replicas_match_transformers():
    """SmolLM2 (9 heads, 3 KV heads) as three replicas at once: TP 3; PP 20/10; TP-3 stage of 20 layers
    then a TP-1 stage of 10 (the shipped examples/plans/smollm2-asym.json layout)."""
    from transformers import AutoModelForCausalLM

    from hexserve.runtime.smollm2 import ensure_checkpoint

    folder = ensure_checkpoint()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    asym = load_plan("examples/plans/smollm2-asym.json").replicas[0].stages
    plan = make_plan(
        "smollm2",
        [([0, 1, 2], (0, 30))],
        [([3], (0, 20)), ([4], (20, 30))],
        [(tuple(d + 5 for d in s.devices), s.layers) for s in asym],
    )
    with LLM("smollm2", plan=plan, cluster=CLUSTER, dtype="float32", max_num_seqs=8) as llm:
        batch = [llm.encode(t) for t in ("The capital of France is", "1, 2, 3, 4,", "def fibonacci(n):",
                                         "Once upon a time", "The weather today is", "Water boils at")]
        check_against_transformers(llm, model, batch)
        assert sorted(r.num_routed for r in llm.replicas) == [2, 2, 2]
        answer = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                          SamplingParams(temperature=0, max_tokens=24))[0]
        assert "Paris" in answer.text


@pytest.mark.slow
def test_dead_and_hung_workers_fail_only_their_replicas(llama):
    folder, model = llama
    plan = make_plan(folder, [([0], (0, 2))], [([1], (0, 1)), ([2], (1, 2))], [([3], (0, 2))])
    llm = LLM(str(folder), dtype="float32", plan=plan, cluster=CLUSTER, block_size=4, max_num_seqs=8, step_timeout_s=4)
    processes = [w.process for r in llm.replicas for w in r.executor.workers]
    try:
        batch = prompts([5, 8, 6, 9, 7, 4])
        long = SamplingParams(max_tokens=40, temperature=0, ignore_eos=True)
        requests = [llm.add_request(p, long) for p in batch]
        for _ in range(3):
            llm.step()
        os.kill(llm.replicas[1].executor.workers[1].process.pid, signal.SIGKILL)  # device 2 dies
        os.kill(llm.replicas[2].executor.workers[0].process.pid, signal.SIGSTOP)  # device 3 hangs
        while llm.has_work():
            llm.step()
        for prompt, request in zip(batch, requests, strict=True):
            out, replica = llm.output(request), request.seq.replica
            if replica == 0:
                assert out.finish_reason == "length" and out.token_ids == reference_greedy(model, prompt, 40)
            else:
                assert out.finish_reason == "error", out
                assert ("device 2" in out.error and "died" in out.error) if replica == 1 else \
                    ("device 3" in out.error and "hangs" in out.error), out.error
        assert llm.stats().replicas_failed == 2
        # New work goes to the replica still serving.
        again = llm.generate([batch[1]], SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))[0]
        assert again.error is None and again.token_ids == reference_greedy(model, batch[1], 5)
    finally:
        llm.shutdown()
    assert not any(p.is_alive() for p in processes)
