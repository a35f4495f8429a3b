"""The disaggregated runtime (HexGen-2's prefill/decode split): which KV pieces cross from a prefill
replica to a decode replica (pure, over a grid of layouts), that their bytes are the cost model's, and
real plans whose prefill replicas hand requests to decode replicas of other layouts, checked against
transformers. The multi-process tests are slow and few; each runs several layouts as replicas of one plan."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import replace

import pytest
import torch

from checkpoints import LLAMA, prompts, reference_greedy
from hexserve.costmodel.calibration import load_calibration
from hexserve.planner.kv_link import kv_slices, pair_bytes
from hexserve.planner.phase import PhaseFit
from hexserve.planner.plan import Plan, Replica, Route, Stage, cluster_fingerprint, model_fingerprint
from hexserve.planner.stagecost import CostTable
from hexserve.planner.workload import Workload
from hexserve.runtime.config import load_config
from hexserve.runtime.engine import LLM
from hexserve.runtime.kv_transfer import route_pieces, transfer_bytes
from hexserve.runtime.launch.topology import plan_workers
from hexserve.runtime.sampling import SamplingParams
from hexserve.runtime.tokenizer import resolve_checkpoint
from hexserve.specs.cluster import parse_cluster
from test_distributed import reference_logprobs

torch.set_num_threads(2)
GREEDY = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True, logprobs=True)
FIRST_ONLY = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True, logprobs=True)

# Sixteen CPU processes standing in for devices: a prefill layout of up to 8 devices and a decode one beside it.
CPUS = {"type": "cpu", "count": 16, "memory_gib": 4, "mem_bandwidth_gbps": 5.5, "tflops": 0.075}
CLUSTER = parse_cluster({"name": "test-cpus-16", "nodes": [{"name": "localhost", "gpus": [CPUS]}]}, "test")


# ------------------------------------------------------------------------------ pieces (no processes)


def layouts(num_kv_heads: int, num_layers: int) -> list[list[tuple[int, int]]]:
    """(TP, layers) per stage: one stage, or two split unevenly both ways, with every TP in 1-4 that a
    model with this many KV heads allows (dividing them, or a multiple of them: replicated heads)."""
    tps = [t for t in (1, 2, 3, 4) if num_kv_heads % t == 0 or t % num_kv_heads == 0]
    cuts = (1, num_layers - 2)
    return [[(t, num_layers)] for t in tps] + [[(a, c), (b, num_layers - c)] for a in tps for b in tps for c in cuts]


def grid(num_layers: int = 5):
    for k in (1, 2, 3):
        for p in layouts(k, num_layers):
            for d in layouts(k, num_layers):
                yield k, p, d


def owners(layout, num_kv_heads: int) -> list[tuple[int, set[tuple[int, int]]]]:
    """(stage, {(layer, KV head)}) of every rank, written out independently of kv_link: a TP group no
    wider than the KV heads splits them evenly; a wider one keeps each head on tp / kv_heads adjacent ranks."""
    out, first = [], 0
    for stage, (tp, n) in enumerate(layout):
        for r in range(tp):
            if tp <= num_kv_heads:
                heads = range(r * num_kv_heads // tp, (r + 1) * num_kv_heads // tp)
            else:
                heads = [r // (tp // num_kv_heads)]
            out.append((stage, {(layer, h) for layer in range(first, first + n) for h in heads}))
        first += n
    return out


def cells(piece) -> set[tuple[int, int]]:
    return {(layer, h) for layer in range(*piece.layers) for h in range(*piece.heads)}


def test_kv_slices_cover_every_layer_and_head_of_each_decode_stage_once():
    for k, p, d in grid():
        sources, targets = owners(p, k), owners(d, k)
        got, receivers = Counter(), defaultdict(set)
        for s in kv_slices(p, d, k):
            assert cells(s) and cells(s) <= sources[s.src][1] and cells(s) <= targets[s.dst][1], (k, p, d, s)
            stage = targets[s.dst][0]
            got.update((stage, *c) for c in cells(s))
            for h in range(*s.heads):
                receivers[(stage, h)].add(s.dst)
        wanted = Counter((stage, *c) for stage, held in targets for c in held)
        # A replicated decode head is wanted by several ranks of a stage but crosses once, to one of them.
        assert set(got) == set(wanted) and set(got.values()) == {1}, (k, p, d)
        assert all(len(ranks) == 1 for ranks in receivers.values()), (k, p, d, receivers)


def test_replicated_prefill_heads_share_the_sending():
    """A prefill head held by several ranks of a stage is sent by each of them, a near-equal part of the
    layers (their links share the work, as the cost model prices it)."""
    slices = kv_slices([(4, 8)], [(1, 8)], 2)  # heads 0 and 1, each on two prefill ranks
    parts = {(s.src, s.heads): s.layers[1] - s.layers[0] for s in slices}
    assert parts == {(0, (0, 1)): 4, (1, (0, 1)): 4, (2, (1, 2)): 4, (3, (1, 2)): 4}


def global_stages(layout, first_rank: int) -> list[tuple[int, ...]]:
    stages, rank = [], first_rank
    for tp, _ in layout:
        stages.append(tuple(range(rank, rank + tp)))
        rank += tp
    return stages


def test_route_pieces_give_every_decode_rank_all_its_heads():
    """Walking the pieces in order, as every worker does: a prefill rank sends only what it holds, a
    decode rank forwards only a head it has already received whole, to a peer of its stage, and every
    decode rank ends with exactly its layers x heads, each once."""
    for k, p, d in grid():
        p_stages, d_stages = global_stages(p, 0), global_stages(d, 100)
        layers = ([n for _, n in p], [n for _, n in d])
        held = dict(zip([r for s in p_stages for r in s], [c for _, c in owners(p, k)], strict=True))
        d_owner = dict(zip([r for s in d_stages for r in s], owners(d, k), strict=True))
        have: dict[int, Counter] = defaultdict(Counter)
        for piece in route_pieces(p_stages, d_stages, layers, k):
            if piece.copy:
                assert d_owner[piece.src][0] == d_owner[piece.dst][0], piece
                assert cells(piece) <= set(have[piece.src]), (k, p, d, piece)
            else:
                assert cells(piece) <= held[piece.src], (k, p, d, piece)
            have[piece.dst].update(cells(piece))
        for rank, (_, wanted) in d_owner.items():
            assert have[rank] == Counter(wanted), (k, p, d, rank)


def fit(layout, devices) -> PhaseFit:
    """A PhaseFit as the planner builds it (kv_link reads only its stages and layers; sim/handoff.py does the same)."""
    stages, it = [], iter(devices)
    for tp, _ in layout:
        stages.append(tuple(next(it) for _ in range(tp)))
    return PhaseFit(tuple(stages), tuple(n for _, n in layout), None)  # type: ignore[arg-type]


def test_bytes_per_request_equal_the_cost_models_formula_exactly():
    """The runtime's bytes per (prefill rank, decode rank) pair are pair_bytes', for SmolLM2's shape (30
    layers) with 1, 2 or 3 KV heads; in all, one prompt's whole KV cache, once."""
    smollm2 = load_config(resolve_checkpoint("smollm2")).spec
    devices, n = CLUSTER.devices, 37
    for k, p, d in grid(num_layers=smollm2.num_layers):
        model = replace(smollm2, num_kv_heads=k)
        table = CostTable(model, CLUSTER, load_calibration(), Workload(prompt_len=n))
        priced = pair_bytes(table, fit(p, devices[:8]), fit(d, devices[8:]))
        priced = {(a.index, b.index): v for (a, b), v in priced.items()}
        pieces = route_pieces(global_stages(p, 0), global_stages(d, 8), ([m for _, m in p], [m for _, m in d]), k)
        moved: dict[tuple[int, int], int] = defaultdict(int)
        for piece in pieces:
            if not piece.copy:
                moved[(piece.src, piece.dst)] += transfer_bytes([piece], n, model.head_dim, model.dtype_bytes)
        assert moved == priced, (k, p, d)
        total = transfer_bytes(pieces, n, model.head_dim, model.dtype_bytes)
        assert total == sum(priced.values()) == n * model.kv_bytes_per_token, (k, p, d)


# ------------------------------------------------------------------------------ real workers


def disaggregated_plan(folder, prefill: list, decode: list) -> Plan:
    """A plan for the checkpoint in `folder` on CLUSTER: prefill and decode replicas, each a list of stages
    (device ids, layer range), equal shares, and a route from every prefill replica to every decode one."""
    spec = load_config(resolve_checkpoint(folder)).spec

    def replica(role: str, stages, share: float) -> Replica:
        return Replica(role, tuple(Stage(tuple(ds), len(ds), layers) for ds, layers in stages), share)

    replicas = [replica("prefill", s, 1 / len(prefill)) for s in prefill]
    replicas += [replica("decode", s, 1 / len(decode)) for s in decode]
    routing = tuple(Route(p, len(prefill) + d, 1 / len(decode), 1.0, 1.0)
                    for p in range(len(prefill)) for d in range(len(decode)))
    return Plan(model=spec.name, model_fingerprint=model_fingerprint(spec), cluster=CLUSTER.name,
                cluster_fingerprint=cluster_fingerprint(CLUSTER), workload=Workload(), replicas=tuple(replicas),
                routing=routing)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """The tests' random Llama (4 heads, 2 KV heads) with 3 layers instead of 2, so that stages can split
    unevenly and a decode stage can take layers from two prefill stages."""
    import transformers

    folder = tmp_path_factory.mktemp("llama3layers")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**dict(LLAMA, num_hidden_layers=3))).eval()
    model.save_pretrained(folder)
    return folder, model


def run(llm: LLM) -> None:
    while llm.has_work():
        llm.step()


def step_until(llm: LLM, done) -> None:
    """Step until `done()`; the engine running out of work first is a failure (never a timed wait)."""
    while not done():
        assert llm.has_work(), "the engine went idle first"
        llm.step()


def expected_kv_bytes(llm: LLM, plan: Plan, handed: list[tuple[int, int, int]]) -> dict[int, tuple[int, int]]:
    """(sent, received) per worker rank for handoffs (prefill replica, decode replica, prompt tokens), from
    the plan's own ranks: every piece of the route, copies included, at 4 bytes (float32)."""
    stages: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for w in plan_workers(plan):
        stages[w.replica][w.stage].append(w)

    def layout(replica: int):
        ordered = [sorted(ws, key=lambda w: w.tp_rank) for _, ws in sorted(stages[replica].items())]
        return [tuple(w.rank for w in ws) for ws in ordered], [ws[0].layers[1] - ws[0].layers[0] for ws in ordered]

    moved = {w.rank: [0, 0] for w in plan_workers(plan)}
    spec = llm.config.spec
    for p, d, n in handed:
        (p_stages, p_layers), (d_stages, d_layers) = layout(p), layout(d)
        for piece in route_pieces(p_stages, d_stages, (p_layers, d_layers), spec.num_kv_heads):
            nbytes = transfer_bytes([replace(piece, copy=False)], n, spec.head_dim, 4)
            moved[piece.src][0] += nbytes
            moved[piece.dst][1] += nbytes
    return {rank: tuple(v) for rank, v in moved.items()}


def reported_kv_bytes(llm: LLM) -> dict[int, tuple[int, int]]:
    return {rank: moved for r in llm.replicas for rank, moved in r.executor.kv_bytes.items()}


def assert_blocks_balanced(llm: LLM) -> None:
    assert not llm.handoffs.queue
    for r in llm.replicas:
        assert r.num_free_blocks == r.num_blocks and not r.handing_off and not r.owner, r.index


def assert_matches_transformers(model, prompt: list[int], out) -> None:
    assert out.error is None, out.error
    assert out.token_ids == reference_greedy(model, prompt, len(out.token_ids))
    torch.testing.assert_close(out.logprobs, reference_logprobs(model, prompt, out.token_ids), atol=2e-4, rtol=1e-4)


@pytest.mark.slow
def test_llama_two_prefill_replicas_hand_off_to_two_decode_layouts(llama):
    """Prefill TP-2 and prefill 2 uneven stages (layers 0-1 | 2) hand requests to decode 2 stages
    (layer 0 | 1-2) and decode TP-4 over 2 KV heads (each replicated on two ranks): tokens and logprobs
    are transformers', every route carries requests, bytes moved are the pieces' bytes, blocks balance."""
    folder, model = llama
    plan = disaggregated_plan(
        folder,
        prefill=[[([0, 1], (0, 3))], [([2], (0, 2)), ([3], (2, 3))]],
        decode=[[([4], (0, 1)), ([5], (1, 3))], [([6, 7, 8, 9], (0, 3))]],
    )
    batch = prompts([5, 17, 9, 30, 3, 12, 21, 8])
    short = prompts([7, 11], seed=2)  # max_tokens=1: done by the prefill replica, which samples the first token
    with LLM(str(folder), dtype="float32", plan=plan, cluster=CLUSTER, block_size=4, max_num_seqs=8) as llm:
        requests = [llm.add_request(p, GREEDY) for p in batch] + [llm.add_request(p, FIRST_ONLY) for p in short]
        prefilled_on = [r.seq.replica for r in requests]
        assert prefilled_on == [0, 1] * 5  # equal prefill shares: the requests alternate
        run(llm)
        for prompt, request in zip(batch + short, requests, strict=True):
            assert_matches_transformers(model, prompt, llm.output(request))
        # Shares 1/2 each: each prefill replica's four handoffs alternate between the decode replicas.
        assert llm.handoffs.sent == {(0, 2): 2, (0, 3): 2, (1, 2): 2, (1, 3): 2}
        assert [r.seq.replica for r in requests[8:]] == [0, 1]  # never handed off
        assert_blocks_balanced(llm)

        handed = [(p, r.seq.replica, len(x)) for p, r, x in zip(prefilled_on[:8], requests[:8], batch, strict=True)]
        reported = reported_kv_bytes(llm)
        assert reported == expected_kv_bytes(llm, plan, handed)
        spec = llm.config.spec
        per_request = sum(transfer_bytes(llm.handoffs.pieces(llm.replicas[p], llm.replicas[d]), n, spec.head_dim, 4)
                          for p, d, n in handed)
        prefill_ranks = {w.rank for w in plan_workers(plan) if w.replica < 2}
        sent_by_prefill = sum(reported[r][0] for r in prefill_ranks)
        decode = [reported[r] for r in reported if r not in prefill_ranks]
        copies = sum(sent for sent, _ in decode)  # only replicated heads move decode rank to decode rank
        assert sent_by_prefill == per_request == sum(received for _, received in decode) - copies
        assert sum(received for r, (_, received) in reported.items() if r in prefill_ranks) == 0
        assert copies > 0  # the TP-4 replica forwarded its replicated heads


@pytest.mark.slow
def test_request_waiting_for_a_decode_replica_can_be_aborted(llama):
    """With 12 blocks of 4 tokens per replica, the prefill replica holds two 20-token prompts but the decode
    replica only one 21-token context: the second waits, its KV kept on the prefill replica until aborted."""
    folder, model = llama
    plan = disaggregated_plan(folder, prefill=[[([0], (0, 3))]], decode=[[([1], (0, 3))]])
    first, second = prompts([20, 20], seed=3)
    long = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True, logprobs=True)
    with LLM(str(folder), dtype="float32", plan=plan, cluster=CLUSTER, block_size=4, max_num_seqs=8,
             num_kv_blocks=12) as llm:
        prefill, decode = llm.replicas
        a, b = llm.add_request(first, long), llm.add_request(second, long)
        # Both prompts run in one prefill step; the next step hands the first over and the second must wait.
        step_until(llm, lambda: a.seq.replica == decode.index)
        assert list(prefill.handing_off) == [b.seq.seq_id] and len(llm.handoffs.queue) == 1
        assert prefill.num_free_blocks == prefill.num_blocks - 5
        llm.abort(b)
        assert prefill.num_free_blocks == prefill.num_blocks and not prefill.handing_off
        run(llm)
        assert llm.output(b).finish_reason == "abort" and b.seq.replica == prefill.index
        assert_matches_transformers(model, first, llm.output(a))
        assert llm.handoffs.sent == {(0, 1): 1}
        assert_blocks_balanced(llm)
        assert reported_kv_bytes(llm) == expected_kv_bytes(llm, plan, [(0, 1, len(first))])


@pytest.mark.slow
def test_seeded_sampling_gives_the_same_tokens_across_the_handoff(llama):
    """docs/distributed.md: a seeded request gives the same tokens in one process or across a plan."""
    folder, _ = llama
    prompt = prompts([9], seed=4)[0]
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=1234, ignore_eos=True)
    with LLM(str(folder), dtype="float32") as llm:
        expected = llm.generate([prompt], params)[0].token_ids
    plan = disaggregated_plan(folder, prefill=[[([0], (0, 3))]], decode=[[([1], (0, 3))]])
    with LLM(str(folder), dtype="float32", plan=plan, cluster=CLUSTER, block_size=4, max_num_seqs=8) as llm:
        assert llm.generate([prompt], params)[0].token_ids == expected


@pytest.mark.slow
def test_smollm2_tp3_and_uneven_pipeline_prefill_hand_off_to_tp1_and_tp3_decode():
    """SmolLM2 (9 heads, 3 KV heads, 30 layers), two prefill replicas -> two decode replicas, every route
    used: prefill TP-3 and prefill 2 uneven stages (0-11 | 12-29) -> decode TP-1 and decode TP-3, so KV is
    re-sharded from head slices to whole layers, from layer ranges to head slices, and both ways."""
    from transformers import AutoModelForCausalLM

    from hexserve.runtime.smollm2 import ensure_checkpoint

    model = AutoModelForCausalLM.from_pretrained(ensure_checkpoint(), dtype=torch.float32).eval()
    plan = disaggregated_plan("smollm2", prefill=[[([0, 1, 2], (0, 30))], [([3], (0, 12)), ([4], (12, 30))]],
                              decode=[[([5], (0, 30))], [([6, 7, 8], (0, 30))]])
    # Four requests: the shares send each prefill replica's two to both decode replicas in turn.
    questions = ["What is the capital of France?", "Name three colours.", "Say hello in Spanish.", "Who wrote Hamlet?"]
    params = SamplingParams(max_tokens=12, temperature=0, logprobs=True)
    with LLM("smollm2", plan=plan, cluster=CLUSTER, dtype="float32", max_num_seqs=8, num_kv_blocks=128) as llm:
        chats = [llm.apply_chat_template([{"role": "user", "content": q}]) for q in questions]
        outs = llm.generate(chats, params)
        for chat, out in zip(chats, outs, strict=True):
            assert_matches_transformers(model, chat, out)
        assert llm.handoffs.sent == {(0, 2): 1, (0, 3): 1, (1, 2): 1, (1, 3): 1}
        assert "Paris" in outs[0].text
        assert_blocks_balanced(llm)
