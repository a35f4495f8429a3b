"""The runtime obeys the plan: each replica runs at the operating point the planner priced unless the
user overrides it, and every device substitution is named (no processes started here)."""

from __future__ import annotations

from dataclasses import replace

from hexserve.planner.plan import Replica, ReplicaPrediction, Stage, load_plan
from hexserve.runtime.launch.launcher import describe_devices
from hexserve.runtime.launch.settings import replica_settings
from hexserve.runtime.launch.topology import plan_workers
from hexserve.specs.cluster import load_cluster

PREDICTED = ReplicaPrediction(
    tokens_per_s=90.0, requests_per_s=0.7, ttft_s=0.8, tpot_s=0.18, latency_s=23.0, unloaded_latency_s=7.0,
    micro_batch=8, in_flight=16, kv_tokens=10_240, bottleneck="stage 0", limit="tpot slo", price_per_hour=0.0,
    usd_per_million_tokens=0.0,
)
TWO_STAGES = Replica("colocated", (Stage((0,), 1, (0, 20)), Stage((1,), 1, (20, 30))), 1.0, PREDICTED)


def test_a_replica_runs_at_the_plans_operating_point():
    s = replica_settings(TWO_STAGES, block_size=16, max_model_len=2048)
    # 16 in flight as two micro-batches of 8; the planner's 10,240 KV tokens = 640 blocks of 16.
    assert (s.max_num_seqs, s.micro_batches, s.kv_blocks, s.source) == (16, 2, 640, "plan")


def test_kv_never_below_one_full_context_per_micro_batch():
    small = replace(TWO_STAGES, predicted=replace(PREDICTED, kv_tokens=1_000))
    assert replica_settings(small, block_size=16, max_model_len=2048).kv_blocks == 2 * 2048 // 16


def test_what_the_user_gives_wins():
    s = replica_settings(TWO_STAGES, 16, 2048, max_num_seqs=4, micro_batches=1, num_kv_blocks=100)
    assert (s.max_num_seqs, s.micro_batches, s.kv_blocks, s.source) == (4, 1, 100, "user")
    assert replica_settings(TWO_STAGES, 16, 2048, max_num_seqs=4).source == "plan and user"


def test_a_replica_without_prediction_takes_the_engine_defaults():
    s = replica_settings(replace(TWO_STAGES, predicted=None), block_size=16, max_model_len=256)
    assert (s.max_num_seqs, s.micro_batches, s.kv_blocks, s.source) == (64, 2, 64 * 256 // 16, "default")


def test_every_device_substitution_is_named():
    plan = load_plan("examples/plans/smollm2-asym.json")
    workers = plan_workers(plan)
    lines = describe_devices(workers, ["cpu"] * 3 + ["cuda:3"], load_cluster(plan.cluster), threads=1)
    assert lines[0] == ("plan device 0 (localhost/0, cpu) -> a CPU process (1 thread): replica 0 stage 0 TP rank 0, "
                        "layers 0-19")
    assert lines[3].startswith("plan device 3 (localhost/3, cpu) -> cuda:3: replica 0 stage 1")


def test_shipped_and_planned_disaggregated_plans_pass_the_launch_check(tmp_path):
    from hexserve.cli import main
    from hexserve.runtime.launch.settings import check_plan
    from hexserve.specs.model import load_model

    smollm2 = load_model("smollm2")
    out = tmp_path / "disagg.json"
    assert main(["plan", "--cluster", "cpu-local", "--model", "smollm2", "--mode", "disaggregated",
                 "--out", str(out)]) == 0
    for path in (out, "examples/plans/smollm2-disagg.json"):
        plan = load_plan(path)
        assert {r.role for r in plan.replicas} == {"prefill", "decode"}
        check_plan(plan, smollm2)  # the cluster the plan names: cpu-local, cpu-local-5
