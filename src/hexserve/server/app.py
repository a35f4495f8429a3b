"""The FastAPI app: OpenAI's /v1/completions, /v1/chat/completions (both streamed by SSE on request),
/v1/models, plus /health and Prometheus /metrics, over one `EngineLoop`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hexserve.runtime.engine import LLM
from hexserve.server import prepare
from hexserve.server.auth import require_api_key
from hexserve.server.drain import Drain, DrainGate
from hexserve.server.engine_loop import Delta, EngineLoop
from hexserve.server.errors import APIError, api_error_handler, validation_error_handler
from hexserve.server.metrics import Metrics
from hexserve.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    ModelCard,
    ModelList,
    random_id,
    usage,
)
from hexserve.server.respond import collect, stream_events


def create_app(
    llm: LLM, served_model_name: str, api_key: str | None = None, max_queue: int = 256,
    thread: ThreadPoolExecutor | None = None, drain_timeout: float | None = None,
) -> FastAPI:
    """`thread`: the engine_thread() that built `llm`, to step it on the same thread (engine_loop.py).
    `drain_timeout`: seconds a shutdown waits for accepted requests (default: sized to them, drain.py)."""
    metrics = Metrics()
    engine = EngineLoop(llm, metrics, max_queue, thread)
    drain = Drain(engine, drain_timeout)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="hexserve", lifespan=lifespan)
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_middleware(DrainGate, drain=drain)
    app.state.engine, app.state.metrics, app.state.drain = engine, metrics, drain
    v1 = [Depends(require_api_key(api_key))]
    served = [served_model_name]

    @app.get("/health")
    async def health() -> JSONResponse:
        # 503 while draining too, so that a load balancer stops sending here while accepted requests end.
        if drain.draining:
            status = "draining"
        else:
            status = "ok" if engine.is_alive() and not engine.stopping else "stopped"
        return JSONResponse({"status": status, "requests": drain.active}, status_code=200 if status == "ok" else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", dependencies=v1)
    async def models() -> ModelList:
        return ModelList(data=[ModelCard(id=served_model_name, root=str(llm.path), max_model_len=llm.max_model_len)])

    @app.post("/v1/completions", dependencies=v1)
    async def completions(req: CompletionRequest, raw: Request):
        prepare.check_model(req, served)
        if req.echo:
            raise APIError(400, "echo: not supported; the response holds only the completion", param="echo")
        ids = prepare.completion_prompt(llm, req)
        stream = engine.submit(ids, prepare.sampling_params(llm, req, len(ids), "prompt"))
        rid = random_id("cmpl")

        def chunk(text: str, finish: str | None) -> dict:
            choice = CompletionChoice(text=text, finish_reason=finish)
            return CompletionResponse(id=rid, model=req.model, choices=[choice]).model_dump()

        if req.stream:
            return stream_events(engine, stream, raw, lambda d: [chunk(d.text, d.finish_reason)],
                                 _usage_chunk(lambda u: CompletionResponse(id=rid, model=req.model, choices=[],
                                                                           usage=u), req.include_usage))
        text, last = await collect(engine, stream, raw)
        return CompletionResponse(id=rid, model=req.model, choices=[CompletionChoice(text=text,
                                  finish_reason=last.finish_reason)], usage=_usage(last))

    @app.post("/v1/chat/completions", dependencies=v1)
    async def chat_completions(req: ChatCompletionRequest, raw: Request):
        prepare.check_model(req, served)
        ids = prepare.chat_prompt(llm, req)
        stream = engine.submit(ids, prepare.sampling_params(llm, req, len(ids), "messages"))
        rid = random_id("chatcmpl")

        role_sent = False

        def chunks(d: Delta) -> list[dict]:
            nonlocal role_sent
            out = []
            if not role_sent:  # OpenAI's first chunk carries the role alone
                role_sent = True
                out.append(_chat_chunk(rid, req.model, DeltaMessage(role="assistant", content=""), None))
            if d.text or d.finish_reason:
                out.append(_chat_chunk(rid, req.model, DeltaMessage(content=d.text or None), d.finish_reason))
            return out

        if req.stream:
            return stream_events(engine, stream, raw, chunks,
                                 _usage_chunk(lambda u: ChatCompletionChunk(id=rid, model=req.model, choices=[],
                                                                            usage=u), req.include_usage))
        text, last = await collect(engine, stream, raw)
        message = DeltaMessage(role="assistant", content=text)
        return ChatCompletionResponse(id=rid, model=req.model, usage=_usage(last),
                                      choices=[ChatChoice(message=message, finish_reason=last.finish_reason)])

    @app.exception_handler(404)
    async def not_found(_: Request, __) -> JSONResponse:
        return APIError(404, "no such route; see /v1/models, /v1/completions, /v1/chat/completions").response()

    return app


def _usage(d: Delta):
    return usage(d.num_prompt_tokens, d.num_output_tokens)


def _usage_chunk(make, wanted: bool):
    """The last chunk with `stream_options.include_usage` (OpenAI's convention): no choices, the usage."""
    return (lambda d: make(_usage(d)).model_dump()) if wanted else None


def _chat_chunk(rid: str, model: str, delta: DeltaMessage, finish: str | None) -> dict:
    chunk = ChatCompletionChunk(id=rid, model=model, choices=[ChatChunkChoice(delta=delta, finish_reason=finish)])
    body = chunk.model_dump()
    body["choices"][0]["delta"] = delta.model_dump(exclude_none=True)  # OpenAI sends only what changed
    return body
