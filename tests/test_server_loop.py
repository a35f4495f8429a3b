"""The engine thread in-process: aborting a queued request, and shutdown failing what is in flight."""

from __future__ import annotations

import asyncio

import pytest

from hexserve.runtime.engine import LLM
from hexserve.runtime.sampling import SamplingParams
from hexserve.server.engine_loop import EngineLoop
from hexserve.server.errors import APIError
from hexserve.server.metrics import Metrics
from test_server import tiny_checkpoint


@pytest.fixture(scope="module")
def llm(tmp_path_factory) -> LLM:
    return LLM(str(tiny_checkpoint(tmp_path_factory.mktemp("tiny"))), max_num_seqs=1, num_kv_blocks=64)


async def final(stream):
    while (delta := await asyncio.wait_for(stream.get(), 30)).finish_reason is None:
        pass
    return delta


def test_abort_waiting_request_then_stop_fails_running_one(llm):
    async def scenario():
        loop = EngineLoop(llm, Metrics(), max_queue=4)
        long = SamplingParams(max_tokens=400, temperature=0, ignore_eos=True)
        # Both submitted before the thread starts, so its first drain takes both: otherwise it could step
        # the first before the second is queued, and `waiting` would still be 0 at the first token.
        running = loop.submit(llm.encode("Hello"), long)
        queued = loop.submit(llm.encode("Waiting"), long)  # max_num_seqs=1: it stays in the queue
        loop.start()
        await asyncio.wait_for(running.get(), 30)
        assert llm.stats().waiting == 1
        loop.abort(queued.request_id)
        for _ in range(100):
            if not llm.stats().waiting:
                break
            await asyncio.sleep(0.05)
        assert not llm.stats().waiting and loop.in_flight == 1
        await asyncio.to_thread(loop.stop)
        last = await final(running)
        assert last.finish_reason == "error" and last.error.status == 503
        stats = llm.stats()
        assert stats.blocks_free == stats.blocks_total and not llm.has_work()
        with pytest.raises(APIError) as refused:
            loop.submit([5, 6], long)
        assert refused.value.status == 503

    asyncio.run(scenario())
