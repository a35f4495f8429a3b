"""The engine against transformers on tiny random checkpoints: same greedy tokens, same logits."""

from __future__ import annotations

import json

import pytest
import torch

from checkpoints import FAMILIES, build, prompts, reference_greedy
from hexserve.runtime import step
from hexserve.runtime.config import load_config
from hexserve.runtime.engine import LLM
from hexserve.runtime.layers import paged_attention_cpu
from hexserve.runtime.sampling import SamplingParams
from hexserve.runtime.step import decode_groups

torch.set_num_threads(2)  # the test machine has two cores; more threads only contend

LENGTHS = [5, 23, 11, 40, 1]
NEW_TOKENS = 12
GREEDY = SamplingParams(temperature=0, max_tokens=NEW_TOKENS)


@pytest.fixture(scope="module", params=list(FAMILIES))
def checkpoint(request, tmp_path_factory):
    """(folder, transformers model, prompts, reference tokens) for one family."""
    folder = tmp_path_factory.mktemp(request.param)
    model = build(request.param, folder)
    ps = prompts(LENGTHS)
    return folder, model, ps, [reference_greedy(model, p, NEW_TOKENS) for p in ps]


def test_batch_matches_transformers(checkpoint):
    folder, _, ps, refs = checkpoint
    llm = LLM(str(folder), dtype="float32", block_size=4)
    outs = llm.generate(ps, GREEDY)
    assert [o.token_ids for o in outs] == refs
    assert llm.stats().blocks_free == llm.stats().blocks_total  # every block back on the free list


def test_one_by_one_matches_transformers(checkpoint):
    folder, _, ps, refs = checkpoint
    llm = LLM(str(folder), dtype="float32", block_size=8)
    assert [llm.generate(p, GREEDY)[0].token_ids for p in ps] == refs


def test_logits_and_logprobs_match(checkpoint):
    folder, model, ps, _ = checkpoint
    llm = LLM(str(folder), dtype="float32")
    with torch.no_grad():
        ref = model(torch.tensor([ps[3]])).logits[0]
    torch.testing.assert_close(llm.runner.prompt_logits(ps[3]), ref, atol=1e-4, rtol=1e-4)
    out = llm.generate(ps[3], SamplingParams(temperature=0, max_tokens=4, logprobs=True))[0]
    with torch.no_grad():
        full = model(torch.tensor([ps[3] + out.token_ids])).logits[0].log_softmax(-1)
    expected = [full[len(ps[3]) - 1 + i, t].item() for i, t in enumerate(out.token_ids)]
    assert out.logprobs == pytest.approx(expected, abs=1e-4)


def test_preemption_under_tiny_pool_gives_same_tokens(checkpoint):
    folder, _, ps, refs = checkpoint
    # 16 blocks of 4 tokens: the five requests need 130 slots together, the pool holds 64.
    llm = LLM(str(folder), dtype="float32", block_size=4, num_kv_blocks=16)
    outs = llm.generate(ps, GREEDY)
    assert [o.token_ids for o in outs] == refs
    assert llm.stats().preemptions > 0
    assert llm.stats().blocks_free == 16


def test_chunked_prefill_gives_same_tokens(checkpoint):
    folder, _, ps, refs = checkpoint
    llm = LLM(str(folder), dtype="float32", block_size=4, max_num_seqs=2, max_num_batched_tokens=7)
    assert [o.token_ids for o in llm.generate(ps, GREEDY)] == refs


def test_decode_groups_give_same_tokens(checkpoint, monkeypatch):
    # Free groups: every distinct context width attends in its own group, padded or not (mask None),
    # and the group boundaries move from step to step as sequences grow and finish. Groups are padded
    # only on the gather + SDPA path (GPUs, or a CPU without the kernel), so this test takes that path.
    folder, _, ps, refs = checkpoint
    monkeypatch.setattr(step, "GROUP_COST_KEYS", 0)
    monkeypatch.setattr(paged_attention_cpu, "available", lambda cache: False)
    llm = LLM(str(folder), dtype="float32", block_size=4)
    assert [o.token_ids for o in llm.generate(ps, GREEDY)] == refs


def test_decode_groups_cut_by_length(monkeypatch):
    assert decode_groups([100, 90, 20, 18], 16) == [(0, 4)]  # padding 4 x 112 rows beats a second group
    assert decode_groups([2000, 60, 50, 40], 16) == [(0, 1), (1, 4)]
    monkeypatch.setattr(step, "GROUP_COST_KEYS", 0)
    assert decode_groups([100, 90, 20, 18], 16) == [(0, 1), (1, 2), (2, 4)]
    assert decode_groups([], 16) == []


def test_sharded_checkpoint_loads(tmp_path):
    model = build("llama", tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    p = prompts([9])[0]
    llm = LLM(str(tmp_path), dtype="float32")
    assert llm.generate(p, GREEDY)[0].token_ids == reference_greedy(model, p, NEW_TOKENS)


def test_config_reads_rope_scaling(checkpoint):
    folder = checkpoint[0]
    cfg = load_config(folder)
    raw = json.loads((folder / "config.json").read_text())
    if "llama3" in folder.name:
        assert cfg.rope_scaling["rope_type"] == "llama3" and cfg.rope_theta == 500000.0
    assert cfg.eos_token_ids == (raw["eos_token_id"],)
