"""Requests through the engine: sampling, stops, bad input, scheduling and block accounting."""

from __future__ import annotations

import json

import pytest
import torch

from checkpoints import build, prompts
from hexserve.errors import SpecError
from hexserve.runtime.engine import LLM
from hexserve.runtime.kv_cache import BlockManager
from hexserve.runtime.layers.sampler import SamplingBatch, sample
from hexserve.runtime.sampling import SamplingParams
from hexserve.runtime.scheduler import Scheduler
from hexserve.runtime.sequence import Sequence

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    build("llama", path)
    return path


@pytest.fixture(scope="module")
def llm(folder):
    return LLM(str(folder), dtype="float32", block_size=4, max_model_len=64, seed=0)


class CharTokenizer:
    """Token t is the letter chr(97 + t % 26): enough to test stop strings without a real tokenizer."""

    eos_token_id = None

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(97 + t % 26) for t in ids)


# ---------------------------------------------------------------------------------------------- sampling


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_k": -2}, "top_k"),
        ({"stop": [""]}, "stop"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
    ],
)
def test_sampling_params_validation(kwargs, field):
    with pytest.raises(SpecError, match=field) as e:
        SamplingParams(**kwargs)
    assert "\n" not in str(e.value)


def test_seeded_sampling_repeats_whatever_the_batch(llm):
    p = prompts([7, 15, 30], seed=3)
    params = SamplingParams(temperature=0.8, top_p=0.9, top_k=50, seed=1234, max_tokens=10)
    alone = llm.generate(p[0], params)[0].token_ids
    together = llm.generate(p, [params, SamplingParams(temperature=1.0, max_tokens=6), params])[0].token_ids
    assert alone == together
    other = llm.generate(p[0], SamplingParams(temperature=0.8, seed=99, max_tokens=10))[0].token_ids
    assert other != alone


def test_top_k_one_and_tiny_top_p_are_greedy(llm):
    p = prompts([12], seed=4)[0]
    greedy = llm.generate(p, SamplingParams(temperature=0, max_tokens=8))[0].token_ids
    assert llm.generate(p, SamplingParams(temperature=1.5, top_k=1, max_tokens=8))[0].token_ids == greedy
    assert llm.generate(p, SamplingParams(temperature=1.5, top_p=1e-6, max_tokens=8))[0].token_ids == greedy


def test_sampler_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]] * 200)
    gens = [torch.Generator().manual_seed(i) for i in range(200)]
    tokens, _ = sample(logits, SamplingBatch([1.0] * 200, [2] * 200, [1.0] * 200, gens))
    assert set(tokens) == {2, 3}
    # p(3) = 0.64: top_p 0.6 keeps token 3 alone; top_p 0.7 needs token 2 as well (0.64 + 0.24).
    tokens, _ = sample(logits, SamplingBatch([1.0] * 200, [0] * 200, [0.6] * 200, gens))
    assert set(tokens) == {3}
    tokens, _ = sample(logits, SamplingBatch([1.0] * 200, [0] * 200, [0.7] * 200, gens))
    assert set(tokens) == {2, 3}
    tokens, logprobs = sample(logits[:1], SamplingBatch([0.0], [0], [1.0], [None]))
    assert tokens == [3] and logprobs[0] == pytest.approx(torch.log_softmax(logits[0], -1)[3].item())


# ---------------------------------------------------------------------------------------------- stopping


def test_max_tokens_stop_token_and_logprobs(llm):
    p = prompts([10], seed=5)[0]
    out = llm.generate(p, SamplingParams(temperature=0, max_tokens=9, logprobs=True))[0]
    assert len(out.token_ids) == 9 and out.finish_reason == "length" and len(out.logprobs) == 9
    stop_at = out.token_ids[4]
    first = out.token_ids.index(stop_at)
    cut = llm.generate(p, SamplingParams(temperature=0, max_tokens=9, stop_token_ids=[stop_at]))[0]
    assert cut.token_ids == out.token_ids[: first + 1] and cut.finish_reason == "stop"


def test_stop_strings_cut_the_text(folder):
    llm = LLM(str(folder), dtype="float32", max_model_len=64)
    llm.tokenizer = CharTokenizer()
    p = prompts([10], seed=5)[0]
    full = llm.generate(p, SamplingParams(temperature=0, max_tokens=9))[0]
    stop = full.text[3:5]
    out = llm.generate(p, SamplingParams(temperature=0, max_tokens=9, stop=stop))[0]
    assert out.finish_reason == "stop" and out.text == full.text[: full.text.index(stop)]


def test_ignore_eos_runs_to_max_tokens(folder):
    llm = LLM(str(folder), dtype="float32", max_model_len=64)
    p = prompts([6], seed=6)[0]
    first = llm.generate(p, SamplingParams(temperature=0, max_tokens=3))[0].token_ids[0]
    llm.eos_token_ids = {first}
    assert llm.generate(p, SamplingParams(temperature=0, max_tokens=3))[0].token_ids == [first]
    out = llm.generate(p, SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))[0]
    assert len(out.token_ids) == 3


# ---------------------------------------------------------------------------------------------- bad input


def test_bad_requests_fail_alone(llm):
    good = prompts([8], seed=7)[0]
    outs = llm.generate([good, [5] * 80, [], [999999]], SamplingParams(temperature=0, max_tokens=4))
    assert outs[0].ok and len(outs[0].token_ids) == 4
    assert "context" in outs[1].error and outs[1].finish_reason == "error"
    assert "empty" in outs[2].error
    assert "token ids" in outs[3].error
    assert llm.stats().blocks_free == llm.stats().blocks_total


def test_long_request_stops_at_the_context(llm):
    out = llm.generate(prompts([60])[0], SamplingParams(temperature=0, max_tokens=100))[0]
    assert len(out.token_ids) == 4 and out.finish_reason == "length"


def test_bad_checkpoints(tmp_path, folder):
    with pytest.raises(SpecError, match="not a folder"):
        LLM(str(tmp_path / "nowhere"))
    with pytest.raises(SpecError, match="config.json"):
        LLM(str(tmp_path))
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(SpecError, match="safetensors"):
        LLM(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(dict(config, architectures=["GPTNeoXForCausalLM"])))
    with pytest.raises(SpecError, match="not supported"):
        LLM(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(SpecError, match="cannot read"):
        LLM(str(tmp_path))


def test_string_prompt_without_tokenizer_is_an_error(llm):
    out = llm.generate("hello", SamplingParams(max_tokens=2))[0]
    assert "tokenizer" in out.error


# ---------------------------------------------------------------------------------------------- scheduling


def _seq(i: int, n: int, max_tokens: int = 4) -> Sequence:
    return Sequence(seq_id=i, token_ids=[1] * n, params=SamplingParams(max_tokens=max_tokens), max_len=n + max_tokens,
                    arrival=i)


def test_block_manager_free_list():
    bm = BlockManager(num_blocks=4, block_size=4)
    a, b = _seq(0, 5), _seq(1, 3)
    bm.allocate(a, 5)
    bm.allocate(b, 3)
    assert a.block_table == [0, 1] and b.block_table == [2] and bm.num_free == 1
    assert bm.slots(a, 3, 6) == [3, 4, 5]
    assert not bm.can_allocate(b, 12) and bm.can_allocate(b, 8)
    bm.free(a)
    assert bm.num_free == 3
    bm.allocate(b, 12)
    assert b.block_table == [2, 0, 1]  # freed blocks are reused


def test_scheduler_mixes_decode_and_prefill_under_budget():
    sched = Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=10)
    a, b, c = _seq(0, 6), _seq(1, 8), _seq(2, 3)
    for s in (a, b, c):
        sched.add(s)
    batch = sched.schedule()
    assert [(e.seq.seq_id, e.num_tokens) for e in batch.entries] == [(0, 6), (1, 4)]  # c waits: FCFS, no skip
    for e in batch.entries:
        e.seq.num_computed_tokens += e.num_tokens
    a.append(7, 0.0)
    batch = sched.schedule()
    assert [(e.seq.seq_id, e.num_tokens) for e in batch.entries] == [(0, 1), (1, 4), (2, 3)]


def test_scheduler_preempts_the_newest():
    sched = Scheduler(BlockManager(4, 4), max_num_seqs=8, max_num_batched_tokens=64)
    old, new = _seq(0, 8), _seq(1, 4)
    sched.add(old)
    sched.add(new)
    assert [e.seq for e in sched.schedule().entries] == [old, new]  # 2 + 1 blocks, 1 kept free
    for seq in (old, new):
        seq.num_computed_tokens = len(seq)
        seq.append(1, 0.0)
    batch = sched.schedule()  # both need a new block, one is free: the newer request goes back
    assert [e.seq for e in batch.entries] == [old] and list(sched.waiting) == [new]
    assert sched.num_preemptions == 1 and new.block_table == [] and new.num_computed_tokens == 0
    sched.finish(old, "stop")
    assert [(e.seq, e.num_tokens) for e in sched.schedule().entries] == [(new, 5)]  # recomputed whole
