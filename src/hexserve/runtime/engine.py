"""`LLM`: the engine's front. Tokenize, queue, route each request to a replica, step the replicas until
every request is done, detokenize (vLLM's offline API: `LLM(model).generate(prompts, SamplingParams(...))`).

Without a plan the model runs whole in this process. With a plan (`LLM(plan="plan.json")`) every replica's
stages run on worker processes (`runtime.launch`), and this process is each replica's leader: it owns
their schedulers and KV block tables and sends each step's metadata to the workers.
"""

from __future__ import annotations

import itertools
import multiprocessing.connection
import random
import sys
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import torch

from hexserve.errors import SpecError
from hexserve.runtime.config import load_config
from hexserve.runtime.device import dtype_name, kv_cache_budget, pick_device, pick_dtype, set_threads
from hexserve.runtime.handoff import Handoffs
from hexserve.runtime.model_runner import ModelRunner
from hexserve.runtime.outputs import RequestOutput
from hexserve.runtime.replica import Completed, LocalExecutor, Replica, ReplicaStats
from hexserve.runtime.sampling import SamplingParams
from hexserve.runtime.scheduler import DEFAULT_MAX_NUM_SEQS
from hexserve.runtime.sequence import Sequence, SequenceStatus
from hexserve.runtime.tokenizer import load_tokenizer, resolve_checkpoint
from hexserve.specs.cluster import Cluster

Prompt = str | list[int]
Message = dict[str, str]
ROUTERS = ("shares", "least-loaded")


@dataclass
class Request:
    """What `add_request` returns: the request's id and prompt, and its sequence (None when refused)."""

    request_id: int
    prompt: str | None
    prompt_token_ids: list[int]
    seq: Sequence | None
    error: str | None = None


@dataclass(frozen=True)
class EngineStats:
    waiting: int
    running: int
    blocks_total: int
    blocks_free: int
    preemptions: int
    replicas_failed: int
    replicas: tuple[ReplicaStats, ...] = ()


class LLM:
    """A model loaded from a Hugging Face checkpoint folder (or "smollm2", the embedded default), run
    whole in this process or, given a plan, across the plan's worker processes.

    num_kv_blocks (or kv_cache_memory in bytes, per device) sizes each replica's paged cache; by default
    it takes 2 GiB on a CPU and 80% of the free memory on a GPU, never more than max_num_seqs (default
    64) full contexts need. With a plan, the plan is checked against its cluster (`cluster`: a YAML file
    or shipped name, default the plan's) and this checkpoint, and each replica runs at the plan's
    predicted operating point (sequences in flight, micro-batches, KV tokens) unless max_num_seqs,
    micro_batches or num_kv_blocks say otherwise (runtime/launch/settings.py); `router` is "shares"
    (the plan's shares) or "least-loaded", and a worker that does not finish a step within
    `step_timeout_s` fails its replica. `threads` sets this process's torch threads (None leaves
    torch's setting); a plan's workers take one each.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        plan: str | Path | None = None,
        dtype: str = "auto",
        device: str | None = None,
        block_size: int = 16,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        max_model_len: int | None = None,
        num_kv_blocks: int | None = None,
        kv_cache_memory: int | None = None,
        seed: int | None = None,
        micro_batches: int | None = None,
        router: str = "shares",
        step_timeout_s: float = 60.0,
        cluster: str | Cluster | None = None,
        threads: int | None = None,
    ):
        if router not in ROUTERS:
            raise SpecError(f"router: {router!r} is unknown; use one of {', '.join(ROUTERS)}")
        self.plan = _load_plan(plan) if plan is not None else None
        folder = resolve_checkpoint(model or (self.plan.model if self.plan else "smollm2"))
        self.config = load_config(folder)
        self.tokenizer = load_tokenizer(folder)
        self.router = router
        self.max_model_len = min(max_model_len or self.config.max_model_len, self.config.max_model_len)
        if threads is not None:
            set_threads(threads)
        self.runner: ModelRunner | None = None
        self.handoffs: Handoffs | None = None  # a disaggregated plan's prefill -> decode queue
        if self.plan is None:
            seqs = max_num_seqs or DEFAULT_MAX_NUM_SEQS
            wanted = num_kv_blocks or -(-seqs * self.max_model_len // block_size)
            self.device = pick_device(device)
            self.dtype = pick_dtype(dtype, self.config.spec.dtype, self.device)
            self.runner = ModelRunner(self.config, self.device, self.dtype)
            shape = self.runner.cache_shape(block_size)
            blocks = num_kv_blocks or min(shape.blocks_in(kv_cache_memory or kv_cache_budget(self.device)), wanted)
            _check_blocks(blocks, "this device")
            self.runner.allocate_cache(shape, blocks)
            budget = _token_budget(max_num_batched_tokens, seqs)
            self.replicas = [Replica(0, LocalExecutor(self.runner), blocks, block_size, seqs, budget)]
        else:
            self._launch(folder, cluster, dtype, device, block_size, max_num_seqs, micro_batches, num_kv_blocks,
                         kv_cache_memory, max_num_batched_tokens, step_timeout_s)
        # A lone sequence must always fit in its slot's blocks, so that the oldest request can always finish.
        smallest = min(slot.blocks.num_blocks for r in self.replicas for slot in r.slots)
        self.max_model_len = min(self.max_model_len, smallest * block_size)
        self.eos_token_ids = set(self.config.eos_token_ids)
        if not self.eos_token_ids and self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(self.tokenizer.eos_token_id)
        self._ids = itertools.count()
        self._rng = random.Random(seed)
        self.num_steps = 0

    def _launch(self, folder, cluster, dtype, device, block_size, max_num_seqs, micro_batches, num_kv_blocks,
                kv_cache_memory, max_num_batched_tokens, step_timeout_s) -> None:
        """The plan's workers, each replica at its operating point (the plan's, or what the user gave)."""
        from hexserve.runtime.launch import check_plan, launch_plan, replica_settings  # torch.distributed
        from hexserve.runtime.launch.launcher import plan_devices
        from hexserve.runtime.launch.topology import plan_workers

        plan = self.plan
        found = check_plan(plan, self.config.spec, cluster)
        # kv_cache_memory given: the memory decides how many blocks, as without a plan.
        settings = [
            replica_settings(r, block_size, self.max_model_len, max_num_seqs, micro_batches,
                             num_kv_blocks or (2**62 if kv_cache_memory else None))
            for r in plan.replicas
        ]
        for i, s in enumerate(settings):
            print(f"replica {i}: {s.max_num_seqs} sequences in flight, {s.micro_batches} micro-batch"
                  f"{'es' if s.micro_batches > 1 else ''}, up to {s.kv_blocks * block_size:,} KV tokens ({s.source})",
                  file=sys.stderr, flush=True)
        # One dtype for the whole plan, chosen here: stages exchange activations and KV in it.
        self.device = torch.device(plan_devices(plan_workers(plan), device)[0])
        self.dtype = pick_dtype(dtype, self.config.spec.dtype, self.device)
        launched = launch_plan(plan, found, folder, dtype_name(self.dtype), block_size,
                               [s.kv_blocks for s in settings], kv_cache_memory, step_timeout_s, device)
        self.replicas = []
        for i, ((executor, blocks), s) in enumerate(zip(launched, settings, strict=True)):
            _check_blocks(blocks // s.micro_batches, f"replica {i}")
            budget = _token_budget(max_num_batched_tokens, s.max_num_seqs)
            self.replicas.append(Replica(i, executor, blocks, block_size, s.max_num_seqs, budget, s.micro_batches,
                                         plan.replicas[i].share, plan.replicas[i].role))
        if any(r.role == "prefill" for r in self.replicas):
            self.handoffs = Handoffs(plan, self.replicas, self.config.spec, self.dtype.itemsize, self.router)

    def shutdown(self) -> None:
        """Stop every worker process (a plan's); the LLM cannot run after it. Safe to call twice."""
        for r in getattr(self, "replicas", []):
            r.executor.shutdown()

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def __del__(self) -> None:
        self.shutdown()

    # ------------------------------------------------------------------------------ public API

    def generate(
        self, prompts: Prompt | Seq[Prompt], params: SamplingParams | Seq[SamplingParams] | None = None
    ) -> list[RequestOutput]:
        """One output per prompt (a string or a list of token ids), in the order given."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        params = params or SamplingParams()
        all_params = list(params) if isinstance(params, Seq) else [params] * len(prompts)
        if len(all_params) != len(prompts):
            raise SpecError(
                f"generate: {len(prompts)} prompts but {len(all_params)} SamplingParams; give one, or one each"
            )
        pending = [self.add_request(p, sp) for p, sp in zip(prompts, all_params, strict=True)]
        while self.has_work():
            self.step()
        return [self.output(request) for request in pending]

    def chat(
        self, messages: list[Message] | list[list[Message]], params: SamplingParams | None = None
    ) -> list[RequestOutput]:
        """Answer one conversation (a list of {"role", "content"}) or several, with the chat template."""
        conversations = [messages] if messages and isinstance(messages[0], dict) else messages
        return self.generate([self.apply_chat_template(c) for c in conversations], params)

    def apply_chat_template(self, messages: list[Message]) -> list[int]:
        tok = self._require_tokenizer()
        if not getattr(tok, "chat_template", None):
            raise SpecError(f"chat: {self.config.path} has no chat template; use generate() with a plain prompt")
        text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tok(text, add_special_tokens=False)["input_ids"]

    def encode(self, prompt: str) -> list[int]:
        return self._require_tokenizer()(prompt)["input_ids"]

    # ------------------------------------------------------------------------------ requests

    def add_request(self, prompt: Prompt, params: SamplingParams) -> Request:
        """Queue one request; a bad one is answered at once with an error and never queued."""
        request_id = next(self._ids)
        text = prompt if isinstance(prompt, str) else None
        try:
            ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
            params.validate()
            self._check_prompt(ids)
            replica = self._route()
        except SpecError as e:
            ids = [] if isinstance(prompt, str) else list(prompt)
            return Request(request_id, text, ids, None, str(e))
        seq = Sequence(
            seq_id=request_id,
            token_ids=list(ids),
            params=params,
            max_len=min(len(ids) + params.max_tokens, self.max_model_len),
            arrival=request_id,
            seed=self._seed(params),
        )
        replica.add(seq)
        seq.replica = replica.index
        return Request(request_id, text, list(ids), seq)

    def abort(self, request: Request) -> None:
        """Drop an unfinished request and free its KV blocks; a no-op once it has finished."""
        seq = request.seq
        if seq is not None and not seq.is_finished:
            self.replicas[seq.replica].finish(seq, "abort")

    def has_work(self) -> bool:
        return bool(self.handoffs and self.handoffs.waiting) or any(r.has_work() for r in self.replicas if not r.error)

    def stats(self) -> EngineStats:
        live = [r for r in self.replicas if not r.error]
        return EngineStats(
            waiting=sum(r.num_waiting for r in live) + (self.handoffs.waiting if self.handoffs else 0),
            running=sum(r.num_running for r in live),
            blocks_total=sum(r.num_blocks for r in live),
            blocks_free=sum(r.num_free_blocks for r in live),
            preemptions=sum(r.num_preemptions for r in self.replicas),
            replicas_failed=len(self.replicas) - len(live),
            replicas=tuple(r.stats() for r in self.replicas),
        )

    def _route(self) -> Replica:
        """The live replica that takes the next request: the one furthest behind its plan share, or the
        one with the fewest unfinished requests per share."""
        live = [r for r in self.replicas if not r.error and r.role != "decode"]  # a request starts with its prompt
        if not live:
            raise SpecError(f"no replica is serving: {self.replicas[0].error}; restart with a working plan")
        if self.router == "least-loaded":
            return min(live, key=lambda r: (r.num_unfinished / max(r.share, 1e-9), r.index))
        return min(live, key=lambda r: ((r.num_routed + 1) / max(r.share, 1e-9), r.index))

    def _check_prompt(self, ids: list[int]) -> None:
        if not ids:
            raise SpecError("prompt: it is empty; give at least one token")
        if len(ids) >= self.max_model_len:
            raise SpecError(
                f"prompt: {len(ids)} tokens leave no room in the {self.max_model_len}-token context; shorten it"
            )
        vocab = self.config.spec.vocab_size
        if min(ids) < 0 or max(ids) >= vocab:
            raise SpecError(f"prompt: token ids must lie in [0, {vocab}); got {min(ids)}..{max(ids)}")

    def _seed(self, params: SamplingParams) -> int | None:
        if params.greedy:
            return None
        return params.seed if params.seed is not None else self._rng.getrandbits(63)

    # ------------------------------------------------------------------------------ the loop

    def step(self) -> list[Completed]:
        """Send every replica's next batches, wait until at least one comes back (or a replica fails),
        and apply what came back: append the sampled tokens, retire finished sequences."""
        if self.handoffs is not None:
            self.handoffs.place()
        live = [r for r in self.replicas if not r.error]
        for r in live:
            r.launch()
        waiting_on = [w for r in live if r.in_flight for w in r.executor.waitables()]
        if waiting_on:
            multiprocessing.connection.wait(waiting_on, timeout=1.0)
        done: list[Completed] = []
        for r in live:
            completed = r.collect()
            if self.handoffs is not None:  # before the results: a request whose KV never came computed garbage
                for seq in r.evict_lost_transfers():
                    self._requeue(seq, f"its KV transfer to replica {r.index} failed")
            for c in completed:
                self._apply(r, c)
            done += completed
            if r.error:
                self._fail(r)
        self.num_steps += 1
        return done

    def _apply(self, replica: Replica, completed: Completed) -> None:
        results = iter(completed.results)
        for e in completed.batch.entries:
            token_logprob = next(results) if e.samples else None
            if e.seq.is_finished or e.seq.replica != replica.index:  # aborted, or moved, while its step was out
                continue
            e.seq.num_computed_tokens += e.num_tokens
            if token_logprob is not None:
                e.seq.append(*token_logprob)
                reason = self._stop_reason(e.seq, token_logprob[0])
                if reason:
                    replica.finish(e.seq, reason)
                elif replica.role == "prefill":  # its first token: a decode replica generates the rest
                    self.handoffs.add(replica, e.seq)

    def _fail(self, replica: Replica) -> None:
        """A replica died or hangs. In a disaggregated plan its requests start again on a live prefill
        replica (prompt and tokens so far recomputed: their KV died with it) and reach a live decode
        replica; otherwise, or when none is left, they end with finish_reason "error"."""
        if self.handoffs is None:
            for seq in replica.fail():
                seq.error = replica.error
        else:
            self.handoffs.forget(replica)
            for seq in replica.evict():
                self._requeue(seq, replica.error)
        replica.executor.shutdown()

    def _requeue(self, seq: Sequence, error: str) -> None:
        try:
            target = self._route()
        except SpecError:
            seq.status, seq.finish_reason, seq.error = SequenceStatus.FINISHED, "error", error
            return
        target.add(seq)
        seq.replica = target.index

    def _stop_reason(self, seq: Sequence, token: int) -> str | None:
        p = seq.params
        if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
            return "stop"
        if p.stop and self._hit_stop_string(seq):
            return "stop"
        return "length" if len(seq) >= seq.max_len else None

    def _hit_stop_string(self, seq: Sequence) -> bool:
        text = self.decode(seq.output_ids, seq.params)
        # Only the end can hold a new match: look back by the longest stop string plus a token's text.
        tail = max(0, len(seq.text) - max(map(len, seq.params.stop)) - 8)
        seq.text = text
        hits = [i for i in (text.find(s, tail) for s in seq.params.stop) if i >= 0]
        if hits:
            seq.text, seq.stopped_on_string = text[: min(hits)], True
        return bool(hits)

    # ------------------------------------------------------------------------------ results

    def output(self, request: Request) -> RequestOutput:
        """The request's result so far (final once its sequence has finished)."""
        seq = request.seq
        out = RequestOutput(request.request_id, request.prompt, request.prompt_token_ids)
        if seq is None or seq.finish_reason == "error":
            out.finish_reason, out.error = "error", request.error or seq.error
            if seq is not None:
                out.token_ids = seq.output_ids
            return out
        out.token_ids, out.finish_reason = seq.output_ids, seq.finish_reason
        out.logprobs = seq.logprobs if seq.params.logprobs else None
        if seq.stopped_on_string:
            out.text = seq.text
            return out
        shown = seq.output_ids
        if seq.finish_reason == "stop":
            shown = shown[:-1]  # the stop token ends the text, it is not part of it
        out.text = self.decode(shown, seq.params)
        return out

    def decode(self, ids: list[int], params: SamplingParams) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(ids, skip_special_tokens=params.skip_special_tokens)

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise SpecError(f"prompt: {self.config.path} has no tokenizer; give token ids or add the tokenizer files")
        return self.tokenizer

    @property
    def path(self) -> Path:
        return self.config.path


def _load_plan(plan):
    from hexserve.planner.plan import Plan, load_plan

    return plan if isinstance(plan, Plan) else load_plan(plan)


def _token_budget(max_num_batched_tokens: int | None, max_num_seqs: int) -> int:
    """Tokens one step may take: at least one per sequence (decodes), 2,048 by default (prompt chunks)."""
    return max(max_num_batched_tokens or max(2048, max_num_seqs), max_num_seqs)


def _check_blocks(blocks: int, where: str) -> None:
    if blocks < 1:
        raise SpecError(f"kv cache: not one block fits on {where}; give more kv_cache_memory or fewer max_num_seqs")
