"""The engine thread in-process: aborting a queued request, shutdown failing what is in flight, and the
drain at shutdown (its timeout sized to the work; what a request gets when it expires)."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from hexserve.runtime.engine import LLM
from hexserve.runtime.sampling import SamplingParams
from hexserve.server.app import create_app
from hexserve.server.drain import FLOOR_S, Drain
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
        assert loop.step_s > 0 and loop.tokens_per_step > 0  # the pace a drain is sized by

    asyncio.run(scenario())


def test_default_drain_timeout_is_sized_to_the_accepted_work(llm):
    async def scenario():
        engine = EngineLoop(llm, Metrics(), max_queue=4)  # never started: what is submitted stays accepted
        assert Drain(engine).timeout_s() == FLOOR_S  # nothing in flight
        engine.submit([5, 6], SamplingParams(max_tokens=300))
        engine.submit([5, 6], SamplingParams(max_tokens=100))
        engine.step_s, engine.tokens_per_step = 0.5, 2.0
        # The longest request needs 300 steps, all 400 tokens at 2 a step 200: 300 x 0.5 s, doubled.
        assert engine.drain_seconds() == 150 and Drain(engine).timeout_s() == 300
        engine.tokens_per_step = 1.0  # one request a step: 400 steps
        assert engine.drain_seconds() == 200
        engine.step_s = 0.01  # 4 s of work: the floor
        assert Drain(engine).timeout_s() == FLOOR_S
        assert Drain(engine, timeout=2).timeout_s() == 2  # --drain-timeout wins

    asyncio.run(scenario())


def hold_after_first_step(llm: LLM, engine: EngineLoop, monkeypatch) -> None:
    """After one step the engine thread waits until the server stops it, so no request can finish
    first, however fast or slow this machine is."""
    step, start = llm.step, llm.num_steps

    def held():
        while llm.num_steps > start and not engine.stopping:
            time.sleep(0.01)
        return step()

    monkeypatch.setattr(llm, "step", held)


def test_drain_timeout_ends_accepted_requests_properly_not_with_a_cut(llm, monkeypatch):
    """A drain that runs out of time ends a stream with a finish_reason "abort" chunk, an error naming
    the drain timeout and [DONE]; a non-streamed request gets a 503 naming it; new requests get 503."""
    app = create_app(llm, "tiny", max_queue=4, drain_timeout=0)
    engine, drain = app.state.engine, app.state.drain
    hold_after_first_step(llm, engine, monkeypatch)

    async def scenario():
        engine.start()
        body = {"model": "tiny", "prompt": "Tell me a long story", "max_tokens": 400, "ignore_eos": True}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hexserve") as client:
            streamed = asyncio.create_task(client.post("/v1/completions", json={**body, "stream": True}))
            plain = asyncio.create_task(client.post("/v1/completions", json=body))  # waits: max_num_seqs=1
            while not (engine.in_flight == 2 and engine.tokens_per_step > 0):
                await asyncio.sleep(0.01)  # both accepted, and a step has generated a token
            await drain.run()
            refused = await client.post("/v1/completions", json=body)
            health = await client.get("/health")
            return await streamed, await plain, refused, health

    try:
        streamed, plain, refused, health = asyncio.run(scenario())
    finally:
        engine.stop()
    events = [line.removeprefix("data: ") for line in streamed.text.splitlines() if line]
    assert streamed.status_code == 200 and events[-1] == "[DONE]"
    error, last = json.loads(events[-2])["error"], json.loads(events[-3])
    assert last["choices"][0]["finish_reason"] == "abort"
    assert error["code"] == "drain_timeout" and "drain timeout (0 s" in error["message"]
    assert plain.status_code == 503 and plain.json()["error"]["code"] == "drain_timeout"
    assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
    assert health.status_code == 503 and health.json()["status"] == "draining"
    stats = llm.stats()
    assert stats.blocks_free == stats.blocks_total and not llm.has_work()
