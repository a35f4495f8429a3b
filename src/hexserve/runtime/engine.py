"""`LLM`: the single-process engine. Tokenize, queue, step the scheduler and the model until every
request is done, detokenize (vLLM's offline API: `LLM(model).generate(prompts, SamplingParams(...))`)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence as Seq
from pathlib import Path

import torch

from hexserve.errors import SpecError
from hexserve.runtime.config import load_config
from hexserve.runtime.device import kv_cache_budget, pick_device, pick_dtype
from hexserve.runtime.kv_cache import BlockManager
from hexserve.runtime.model_runner import ModelRunner
from hexserve.runtime.outputs import RequestOutput
from hexserve.runtime.sampling import SamplingParams
from hexserve.runtime.scheduler import Batch, Scheduler
from hexserve.runtime.sequence import Sequence
from hexserve.runtime.tokenizer import load_tokenizer, resolve_checkpoint

Prompt = str | list[int]
Message = dict[str, str]


class LLM:
    """A model loaded from a Hugging Face checkpoint folder (or "smollm2", the embedded default).

    num_kv_blocks (or kv_cache_memory in bytes) sizes the paged cache; by default it takes 2 GiB on a
    CPU and 80% of the free memory on a GPU, never more than max_num_seqs full contexts need.
    """

    def __init__(
        self,
        model: str = "smollm2",
        *,
        dtype: str = "auto",
        device: str | None = None,
        block_size: int = 16,
        max_num_seqs: int = 64,
        max_num_batched_tokens: int | None = None,
        max_model_len: int | None = None,
        num_kv_blocks: int | None = None,
        kv_cache_memory: int | None = None,
        seed: int | None = None,
    ):
        folder = resolve_checkpoint(model)
        self.config = load_config(folder)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.config.spec.dtype, self.device)
        self.tokenizer = load_tokenizer(folder)
        self.runner = ModelRunner(self.config, self.device, self.dtype)
        shape = self.runner.cache_shape(block_size)
        self.max_model_len = min(max_model_len or self.config.max_model_len, self.config.max_model_len)
        if num_kv_blocks is None:
            wanted = -(-max_num_seqs * self.max_model_len // block_size)
            num_kv_blocks = min(shape.blocks_in(kv_cache_memory or kv_cache_budget(self.device)), wanted)
        if num_kv_blocks < 1:
            raise SpecError("kv cache: not one block fits; give more kv_cache_memory or fewer max_num_seqs")
        # A lone sequence must always fit, so that the oldest request can always finish.
        self.max_model_len = min(self.max_model_len, num_kv_blocks * block_size)
        self.runner.allocate_cache(shape, num_kv_blocks)
        self.blocks = BlockManager(num_kv_blocks, block_size)
        budget = max_num_batched_tokens or max(2048, max_num_seqs)
        self.scheduler = Scheduler(self.blocks, max_num_seqs, max(budget, max_num_seqs))
        self.eos_token_ids = set(self.config.eos_token_ids)
        if not self.eos_token_ids and self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(self.tokenizer.eos_token_id)
        self._ids = itertools.count()
        self._rng = random.Random(seed)
        self.num_steps = 0

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
        while self.scheduler.has_work():
            self.step()
        return [self._output(*item) for item in pending]

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

    def add_request(self, prompt: Prompt, params: SamplingParams) -> tuple:
        """Queue one request; a bad one is answered at once with an error and never queued."""
        request_id = next(self._ids)
        text = prompt if isinstance(prompt, str) else None
        try:
            ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
            params.validate()
            self._check_prompt(ids)
        except SpecError as e:
            ids = [] if isinstance(prompt, str) else list(prompt)
            return request_id, text, ids, None, str(e)
        seq = Sequence(
            seq_id=request_id,
            token_ids=list(ids),
            params=params,
            max_len=min(len(ids) + params.max_tokens, self.max_model_len),
            arrival=request_id,
            generator=self._generator(params),
        )
        self.scheduler.add(seq)
        return request_id, text, list(ids), seq, None

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

    def _generator(self, params: SamplingParams) -> torch.Generator | None:
        if params.greedy:
            return None
        seed = params.seed if params.seed is not None else self._rng.getrandbits(63)
        return torch.Generator(device=self.device).manual_seed(seed)

    # ------------------------------------------------------------------------------ the loop

    def step(self) -> Batch:
        """Schedule, run the model once, append the sampled tokens, retire finished sequences."""
        batch = self.scheduler.schedule()
        assert batch.entries, "the scheduler found nothing to run with requests pending"
        results = iter(self.runner.run(batch, self.blocks))
        for e in batch.entries:
            sampled = e.samples
            e.seq.num_computed_tokens += e.num_tokens
            if sampled:
                token, logprob = next(results)
                e.seq.append(token, logprob)
                reason = self._stop_reason(e.seq, token)
                if reason:
                    self.scheduler.finish(e.seq, reason)
        self.num_steps += 1
        return batch

    def _stop_reason(self, seq: Sequence, token: int) -> str | None:
        p = seq.params
        if (token in self.eos_token_ids and not p.ignore_eos) or token in p.stop_token_ids:
            return "stop"
        if p.stop and self._hit_stop_string(seq):
            return "stop"
        return "length" if len(seq) >= seq.max_len else None

    def _hit_stop_string(self, seq: Sequence) -> bool:
        text = self._decode(seq.output_ids, seq.params)
        # Only the end can hold a new match: look back by the longest stop string plus a token's text.
        tail = max(0, len(seq.text) - max(map(len, seq.params.stop)) - 8)
        seq.text = text
        hits = [i for i in (text.find(s, tail) for s in seq.params.stop) if i >= 0]
        if hits:
            seq.text, seq.stopped_on_string = text[: min(hits)], True
        return bool(hits)

    # ------------------------------------------------------------------------------ results

    def _output(self, request_id: int, text: str | None, ids: list[int], seq: Sequence | None, error: str | None):
        out = RequestOutput(request_id, text, ids)
        if seq is None:
            out.finish_reason, out.error = "error", error
            return out
        out.token_ids, out.finish_reason = seq.output_ids, seq.finish_reason
        out.logprobs = seq.logprobs if seq.params.logprobs else None
        if seq.stopped_on_string:
            out.text = seq.text
            return out
        shown = seq.output_ids
        if seq.finish_reason == "stop":
            shown = shown[:-1]  # the stop token ends the text, it is not part of it
        out.text = self._decode(shown, seq.params)
        return out

    def _decode(self, ids: list[int], params: SamplingParams) -> str:
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
