"""Cost model: hand-computed memory and collective times, and the properties the planners rely on."""

import json
from dataclasses import replace

import pytest

from hexserve.costmodel.calibration import load_calibration
from hexserve.costmodel.estimate import estimate, split_layers, stage_groups
from hexserve.costmodel.latency import (
    allreduce_time,
    decode_step_time,
    kv_transfer_time,
    pp_send_time,
    prefill_time,
)
from hexserve.costmodel.memory import kv_bytes_per_token_per_rank, stage_memory, weight_bytes_per_rank
from hexserve.costmodel.stage import StageShape, slowest_type
from hexserve.errors import SpecError
from hexserve.specs.cluster import cluster_from_gpus, load_cluster
from hexserve.specs.gpus import lookup_device_type
from hexserve.specs.links import LINK_KINDS
from hexserve.specs.model import load_model

CAL = load_calibration()
LLAMA70 = load_model("llama-2-70b")
H100 = lookup_device_type("h100")
NVLINK = LINK_KINDS["nvlink4"]


def whole(tp: int, device=H100, link=NVLINK, layers: int = 80) -> StageShape:
    return StageShape(device, tp, layers, True, True, link if tp > 1 else None)


def test_weights_per_rank_hand_computed():
    # TP=8 over all 80 layers: sharded layer weights / 8, norms whole, embeddings and head / 8.
    m = LLAMA70
    per_layer = (855_654_400 - 2 * 8192) / 8 + 2 * 8192
    expected = 80 * per_layer + (32000 * 8192 + 32000 * 8192 + 8192) / 8
    assert weight_bytes_per_rank(m, whole(8)) == int(expected * 2)


def test_gqa_kv_per_rank_divides_kv_heads_then_replicates():
    m = LLAMA70
    assert kv_bytes_per_token_per_rank(m, whole(1)) == 327_680
    assert kv_bytes_per_token_per_rank(m, whole(8)) == 327_680 // 8
    assert kv_bytes_per_token_per_rank(m, whole(16)) == 327_680 // 8  # one KV head per rank, replicated


def test_more_tp_means_less_memory_per_device():
    used = [stage_memory(LLAMA70, whole(t), H100, CAL).used(32 * 1024) for t in (1, 2, 4, 8)]
    assert used == sorted(used, reverse=True) and used[0] > 7 * used[-1]


def test_tied_head_on_a_later_stage_holds_its_own_copy():
    smol = load_model("smollm2-135m")
    last = StageShape(H100, 1, 10, has_embedding=False, has_head=True)
    middle = replace(last, has_head=False)
    vocab_matrix = smol.vocab_size * smol.hidden_size * smol.dtype_bytes
    assert weight_bytes_per_rank(smol, last) - weight_bytes_per_rank(smol, middle) == vocab_matrix + 576 * 2


def test_memory_shortfall_and_kv_pool():
    a4000 = lookup_device_type("a4000")
    mem = stage_memory(LLAMA70, whole(8, a4000, LINK_KINDS["pcie4"]), a4000, CAL)
    assert not mem.fits() and mem.max_kv_tokens == 0
    assert mem.shortfall() == mem.static - mem.usable > 0
    ok = stage_memory(LLAMA70, whole(8), H100, CAL)
    assert ok.fits(ok.max_kv_tokens) and not ok.fits(ok.max_kv_tokens + 1)


def test_ring_allreduce_hand_computed():
    eff = CAL.default
    nbytes = 1024 * 8192 * 2
    expected = eff.allreduce_s + 2 * 7 * (3e-6 + nbytes / (8 * 450e9 * eff.link))
    assert allreduce_time(nbytes, 8, NVLINK, eff) == pytest.approx(expected)
    assert allreduce_time(nbytes, 1, None, eff) == 0.0


def test_slower_link_means_longer_allreduce():
    times = [allreduce_time(16e6, 4, LINK_KINDS[k], CAL.default) for k in ("nvlink4", "pcie4", "eth-100g")]
    assert times == sorted(times) and times[0] < times[-1]


def test_longer_context_means_longer_decode_step():
    steps = [decode_step_time(LLAMA70, whole(8), CAL, 32, c) for c in (128, 1024, 4096, 16384)]
    assert steps == sorted(steps) and steps[-1] > steps[0]


def test_decode_step_is_at_least_the_weight_read():
    stage = whole(8)
    weight_read = weight_bytes_per_rank(LLAMA70, stage) / (H100.mem_bandwidth_gbps * 1e9)
    step = decode_step_time(LLAMA70, stage, CAL, 1, 128)
    assert weight_read < step < 10 * weight_read


def test_prefill_is_compute_bound_and_grows_with_prompt():
    stage = whole(8)
    flops_bound = 2 * LLAMA70.params * 4096 / 8 / (H100.tflops * 1e12)
    t4096 = prefill_time(LLAMA70, stage, CAL, 1, 4096)
    assert t4096 > flops_bound
    assert prefill_time(LLAMA70, stage, CAL, 1, 1024) < t4096 / 3


def test_faster_device_is_faster():
    a6000 = lookup_device_type("a6000")
    assert decode_step_time(LLAMA70, whole(8, a6000, LINK_KINDS["pcie4"]), CAL, 32, 1024) > decode_step_time(
        LLAMA70, whole(8), CAL, 32, 1024)


def test_mixed_group_moves_at_its_slowest_member():
    t = slowest_type([H100, lookup_device_type("l40")])
    assert t.tflops == 181 and t.mem_bandwidth_gbps == 864 and t.memory_gib == 48


def test_kv_transfer_and_pp_send_scale_with_bytes():
    eff = CAL.default
    ib = LINK_KINDS["ib-hdr"]
    full = kv_transfer_time(LLAMA70, 1024, ib, eff)
    assert full == pytest.approx(eff.p2p_s + ib.latency + 1024 * 327_680 / (ib.bandwidth * eff.link))
    assert kv_transfer_time(LLAMA70, 1024, ib, eff, num_layers=40) < full
    assert pp_send_time(LLAMA70, 1024, ib, eff) > pp_send_time(LLAMA70, 1, ib, eff)


def test_layer_split_is_proportional_and_complete():
    assert split_layers(80, [192, 48, 32]) == [57, 14, 9]  # 56.47, 14.12, 9.41: largest remainder
    assert sum(split_layers(7, [1, 1, 1])) == 7 and min(split_layers(3, [100, 1, 1])) == 1
    with pytest.raises(SpecError, match="4 pipeline stages but only 3 layers"):
        split_layers(3, [1, 1, 1, 1])


def test_default_layout_is_asymmetric_on_hexgen_case():
    cluster = load_cluster("hexgen-case")
    groups = stage_groups(LLAMA70, cluster.devices, None)
    assert [len(g) for g in groups] == [4, 2, 2]
    result = estimate(LLAMA70, cluster, CAL)
    assert result.fits
    symmetric = estimate(LLAMA70, cluster, CAL, tp=8)
    assert not symmetric.fits
    assert [s.split(" ")[0] for s in symmetric.shortfalls()] == ["workstation/6", "workstation/7"]


def test_estimate_on_8_h100():
    result = estimate(LLAMA70, cluster_from_gpus("8xh100"), CAL)
    assert result.fits and {d.shape.tp for d in result.devices} == {8}
    assert 0.01 < result.decode_step_s < 0.1 and 0.02 < result.prefill_s < 0.5


def test_calibration_file_overrides_some_fields(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"default": {"memory": 0.5}, "devices": {"H100-SXM": {"kernel_s": 1e-5}}}))
    cal = load_calibration(path)
    assert cal.default.memory == 0.5 and cal.default.matmul == CAL.default.matmul
    assert cal.for_type("H100-SXM").kernel_s == 1e-5 and cal.for_type("H100-SXM").memory == 0.5
    slower = decode_step_time(LLAMA70, whole(8), cal, 32, 1024)
    assert slower > decode_step_time(LLAMA70, whole(8), CAL, 32, 1024)


@pytest.mark.parametrize("content,message", [
    ('{"default": {"memory": 1.5}}', r"default\.memory: must be a fraction in \(0, 1\]"),
    ('{"default": {"speed": 1}}', r"default\.speed: unknown factor"),
    ('{"default": ', "malformed JSON at line 1"),
])
def test_bad_calibration_is_one_line(tmp_path, content, message):
    path = tmp_path / "cal.json"
    path.write_text(content)
    with pytest.raises(SpecError, match=message):
        load_calibration(path)
