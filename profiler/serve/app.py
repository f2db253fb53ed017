"""The ASGI app of `gpumix serve` (FastAPI): OpenAI's completions and chat completions, streamed
over server-sent events or whole, /v1/models, /health and /metrics.

  POST /v1/completions        {model, prompt: str | [int], max_tokens, stream, stream_options}
  POST /v1/chat/completions   {model, messages: [{role, content}], max_tokens | max_completion_tokens, ...}
  GET  /v1/models, /health (503 when an engine is dead or stalled), /metrics (Prometheus, vLLM's names)

The request's `model` picks the engine; it may be left out when one model is served. With an API
key, every /v1 route needs `Authorization: Bearer KEY` (401 otherwise); /health and /metrics stay
open, as with `vllm serve --api-key`. Bodies are read here, not by FastAPI: at most
Limits.body_bytes (413 beyond), UTF-8, JSON through planner.reading's bounded parser (nesting depth,
integer size), then the strict pydantic models of protocol.py. Every error is OpenAI-shaped:
{"error": {"message", "type", "param", "code"}}.
"""
from __future__ import annotations

import asyncio
import hmac
import uuid
from dataclasses import dataclass

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from gpumix.planner.errors import InputError
from gpumix.planner.reading import decode, parse_json
from gpumix.profiler.serve import protocol as p
from gpumix.profiler.serve.metrics import Metrics
from gpumix.profiler.serve.streams import Hub, TokenStream, Watch


@dataclass(frozen=True)
class Limits:
    body_bytes: int = p.MAX_BODY
    stream_buffer: int = 1024  # events a stuck stream may hold before it is cut off
    request_timeout_s: float = 600.0  # the engine's silence on one request before it fails
    read_timeout_s: float = 10.0  # a request (head and body) must arrive whole within this
    keep_alive_s: float = 5.0  # an idle keep-alive connection is closed after this
    stall_s: float = 60.0  # in-flight requests and no token for this long: /health says stalled
    shutdown_grace_s: float = 30.0  # SIGTERM: streams this long to finish, then an error chunk
    backlog: int = 2048


class ServeState:
    """What the routes share: the engines' doors, limits, metrics, and (once serving) the Hub."""

    def __init__(self, doors: dict, max_seq: int, api_key: str | None, limits: Limits):
        self.doors, self.max_seq, self.api_key, self.limits = dict(doors), max_seq, api_key, limits
        self.watches = {name: Watch(d, limits.stall_s) for name, d in self.doors.items()}
        self.metrics = Metrics(list(self.doors))
        self.draining = False
        self._hub: Hub | None = None

    @property
    def hub(self) -> Hub:
        loop = asyncio.get_running_loop()
        if self._hub is None or self._hub.loop is not loop:
            self._hub = Hub(loop, self.limits.stream_buffer)
        return self._hub

    @property
    def streams_cut(self) -> int:
        """Streams cut off so far (clients that stopped reading)."""
        return self._hub.cut if self._hub is not None else 0

    @property
    def open_streams(self) -> int:
        return len(self._hub.streams) if self._hub is not None else 0

    def begin_shutdown(self) -> None:
        """New requests get 503; streams still open after the grace period get an error chunk."""
        self.draining = True
        if self._hub is not None:
            self._hub.loop.call_later(self.limits.shutdown_grace_s, self._hub.fail_all, "server shutting down")

    def trouble(self) -> str | None:
        return next((why for w in self.watches.values() if (why := w.trouble())), None)


def build_app(state: ServeState) -> FastAPI:
    app = FastAPI(title="gpumix serve", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.gpumix = state

    async def check_key(request: Request) -> None:
        if state.api_key is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, key = got.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), state.api_key.encode()):
            raise p.ApiError(401, "Incorrect API key provided: send it as `Authorization: Bearer KEY`",
                             code="invalid_api_key")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_key)])

    @v1.get("/models")
    async def models() -> dict:
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "gpumix", "max_model_len": state.max_seq}
            for name in state.doors]}

    @v1.post("/completions")
    async def completions(request: Request):
        return await _answer(state, request, chat=False)

    @v1.post("/chat/completions")
    async def chat_completions(request: Request):
        return await _answer(state, request, chat=True)

    app.include_router(v1)

    @app.get("/health")
    async def health():
        why = "server shutting down" if state.draining else state.trouble()
        if why:
            return JSONResponse(p.ApiError(503, why).doc(), 503)
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.exception_handler(p.ApiError)
    async def api_error(request: Request, e: p.ApiError):
        return JSONResponse(e.doc(), e.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return JSONResponse(p.ApiError(e.status_code, f"{e.detail}: {request.method} {request.url.path}").doc(),
                            e.status_code)

    return app


async def _read_json(request: Request, limit: int):
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise p.ApiError(413, f"the body may be at most {limit} bytes", code="body_too_large")
    chunks, size = [], 0
    try:
        async for c in request.stream():
            size += len(c)
            if size > limit:
                raise p.ApiError(413, f"the body may be at most {limit} bytes", code="body_too_large")
            chunks.append(c)
    except ClientDisconnect:
        raise p.ApiError(400, "the client left before sending the whole body") from None
    if not size:
        raise p.ApiError(400, "the body must be a JSON object")
    try:
        return parse_json(decode(b"".join(chunks), "request body"), "request body")
    except InputError as e:
        raise p.ApiError(400, f"{e.field}: {e.message}" if e.field else e.message) from None


async def _answer(state: ServeState, request: Request, chat: bool):
    if state.draining:
        raise p.ApiError(503, "server shutting down")
    doc = await _read_json(request, state.limits.body_bytes)
    req = p.parse(p.ChatRequest if chat else p.CompletionRequest, doc)
    if req.model is None and len(state.doors) > 1:
        raise p.ApiError(400, f"model is required: this server serves {', '.join(state.doors)}", "model")
    name = req.model if req.model is not None else next(iter(state.doors))
    if name not in state.doors:
        raise p.ApiError(404, f"The model `{name}` does not exist.", "model", "model_not_found")
    watch = state.watches[name]
    prompt = p.prompt_tokens(req, watch.door.vocab)
    n = p.wanted_tokens(req, len(prompt), state.max_seq)
    why = watch.trouble()
    if why:
        raise p.ApiError(503, why)
    stream = state.hub.open(watch, state.metrics.models[name], len(prompt))
    stream.abort = (request.scope.get("extensions") or {}).get("gpumix.abort")
    shape = p.Shape(chat, f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}", name)
    stream.submit(prompt, n)
    if req.stream:
        usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(_sse(stream, shape, usage, state.limits.request_timeout_s),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        return JSONResponse(await _whole(stream, shape, state.limits.request_timeout_s))
    finally:
        stream.close()


def _usage(stream: TokenStream) -> dict:
    return {"prompt_tokens": stream.n_prompt, "completion_tokens": stream.tokens,
            "total_tokens": stream.n_prompt + stream.tokens}


async def _whole(stream: TokenStream, shape: p.Shape, timeout_s: float) -> dict:
    text = []
    while True:
        events = await stream.take(timeout_s)
        if not events:
            raise p.ApiError(500, f"no token within {timeout_s:g} s")
        for tok, _, done, err in events:
            if err:
                raise p.ApiError(503 if err == "server shutting down" else 500, err)
            if done:
                return shape.whole("".join(text), _usage(stream))
            text.append(p.token_text(tok))


def _data(doc) -> str:
    import json

    return f"data: {json.dumps(doc)}\n\n"


async def _sse(stream: TokenStream, shape: p.Shape, include_usage: bool, timeout_s: float):
    """The stream's chunks: whatever the engine produced since the last write goes out in one write."""
    try:
        head = shape.first()
        if head:
            yield _data(head)
        while True:
            events = await stream.take(timeout_s)
            if stream.closed:  # cut off: the connection is gone
                return
            if not events:
                yield _data(p.ApiError(500, f"no token within {timeout_s:g} s").doc()) + "data: [DONE]\n\n"
                return
            out, end = [], False
            for tok, _, done, err in events:
                if err:
                    out.append(_data(p.ApiError(500, err).doc()))
                    out.append("data: [DONE]\n\n")
                    end = True
                    break
                if done:
                    out.append(_data(shape.finish()))
                    if include_usage:
                        out.append(_data(shape.usage_chunk(_usage(stream))))
                    out.append("data: [DONE]\n\n")
                    end = True
                    break
                out.append(f"data: {shape.piece(p.token_text(tok))}\n\n")
            stream.writing = True
            yield "".join(out)
            stream.writing = False
            if end:
                return
    finally:
        stream.close()
