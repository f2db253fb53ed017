"""A streaming client for OpenAI-compatible servers (vLLM, SGLang, TGI, hosted endpoints, `gpumix
serve`) on httpx: one AsyncClient per run, an HTTP/1.1 keep-alive pool sized to the requests it
may have in flight, TLS verified, connect/read/write timeouts.

api="completions" POSTs /v1/completions with `prompt`; api="chat" POSTs /v1/chat/completions with
one user message. Prompts are `input_tokens` copies of a short word (one token in most tokenizers;
exactly one in `gpumix serve`; chat templates add their own tokens), or token-id lists with
prompt="tokens" (completions only). `ignore_eos` and `min_tokens` (vLLM/SGLang extensions, ignored
elsewhere) ask for exactly `output_tokens` tokens. Token counts come from the usage of the final
stream chunk when the server sends one (stream_options.include_usage), else one per chunk that
carries text. An API key goes in `Authorization: Bearer`.
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from dataclasses import dataclass, field

import httpx

MAX_ERROR_BODY = 300
APIS = ("completions", "chat")
PATHS = {"completions": "/completions", "chat": "/chat/completions"}
MAX_POOL = 4096  # connections one backend keeps at most
SHARD = 32  # connections per httpx client of a backend's pool


class AuthError(ValueError):
    """The server refused the API key (HTTP 401 or 403)."""


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    root: str  # path of the API root, ".../v1"
    api: str = "completions"
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str, api_key: str | None = None, api: str = "completions") -> "Endpoint":
        """http(s)://host:port, .../v1, .../v1/completions or .../v1/chat/completions; ValueError
        if it is none of those."""
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, got {api!r}")
        u = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        try:
            port = u.port
        except ValueError as e:
            raise ValueError(f"expected http(s)://host:port[/v1], got {url!r}: {e}") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"expected http(s)://host:port[/v1], got {url!r}")
        root = u.path.rstrip("/")
        for tail in ("/chat/completions", "/completions"):
            if root.endswith(tail):
                root = root[: -len(tail)]
                break
        if not root.endswith("/v1"):
            root += "/v1"
        return cls(u.scheme, u.hostname, port or (443 if u.scheme == "https" else 80), root, api, api_key or None)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def base(self) -> str:
        return self.origin + self.root

    @property
    def path(self) -> str:
        return self.root + PATHS[self.api]

    @property
    def models_path(self) -> str:
        return self.root + "/models"

    @property
    def headers(self) -> dict:
        h = {"Accept": "text/event-stream"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        return h


def _error_message(text: str) -> str:
    try:
        doc = json.loads(text)
        err = doc.get("error", doc) if isinstance(doc, dict) else doc
        msg = err.get("message") or err.get("detail") if isinstance(err, dict) else err
        return str(msg or text)[:MAX_ERROR_BODY]
    except (json.JSONDecodeError, AttributeError):
        return text.strip()[:MAX_ERROR_BODY] or "(empty body)"


def list_models(ep: Endpoint, timeout_s: float = 5.0) -> list[str]:
    """Model ids from GET /v1/models. Raises OSError (refused, timeout), AuthError (the key was
    refused) or ValueError (any other bad answer)."""
    try:
        resp = httpx.get(ep.origin + ep.models_path, headers=ep.headers, timeout=timeout_s)
    except httpx.TransportError as e:
        raise ConnectionError(str(e) or type(e).__name__) from None
    body = resp.text[:1 << 20]
    if resp.status_code in (401, 403):
        raise AuthError(f"GET {ep.models_path}: HTTP {resp.status_code}: {_error_message(body)}")
    if resp.status_code != 200:
        raise ValueError(f"GET {ep.models_path}: HTTP {resp.status_code}")
    try:
        return [m["id"] for m in json.loads(body)["data"]]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"GET {ep.models_path}: not a model list ({e})") from None


class EndpointBackend:
    """loadgen Backend: one streamed completion per arrival, on a shared keep-alive pool."""

    def __init__(self, ep: Endpoint, model: str, prompt: str = "text", word: str = "hi",
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 600.0):
        if prompt == "tokens" and ep.api == "chat":
            raise ValueError("token-id prompts need the completions API (chat messages are text)")
        self.ep, self.model, self.prompt, self.word = ep, model, prompt, word
        self.timeout = httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=30.0, pool=None)
        self.pool_size = 256
        self._ssl = None  # one verified TLS context for every shard (building one reads the CA bundle)
        self._shards: list[httpx.AsyncClient | None] = []
        self._next = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def reserve(self, requests: int) -> None:
        """Size the pool for a run of this many requests (open loop: each may be in flight at once)."""
        self.pool_size = max(1, min(MAX_POOL, requests))

    def client(self) -> httpx.AsyncClient:
        """The next shard of the pool, round robin. httpcore scans a pool's connections on every
        request, so one pool of thousands of connections costs O(connections) a request; shards of
        at most SHARD connections keep that bounded when a server falls behind and connections pile up."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a client lives on one event loop
            self._shards = [None] * -(-self.pool_size // SHARD)
            self._loop = loop
        k = self._next = (self._next + 1) % len(self._shards)
        if self._shards[k] is None:
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            size = min(SHARD, self.pool_size)
            self._shards[k] = httpx.AsyncClient(
                base_url=self.ep.origin, headers=self.ep.headers, timeout=self.timeout, verify=self._ssl,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size), http1=True, http2=False)
        return self._shards[k]

    @property
    def _client(self) -> httpx.AsyncClient | None:  # the first shard (tests look at it)
        return next((c for c in self._shards if c is not None), None)

    async def aclose(self) -> None:
        if self._loop is asyncio.get_running_loop():
            for c in self._shards:
                if c is not None:
                    await c.aclose()
        self._shards, self._loop = [], None

    def body(self, input_tokens: int, output_tokens: int, index: int) -> dict:
        text = " ".join([self.word] * input_tokens)
        doc = {"model": self.model, "max_tokens": output_tokens, "min_tokens": output_tokens, "ignore_eos": True,
               "temperature": 0.0, "stream": True, "stream_options": {"include_usage": True}}
        if self.ep.api == "chat":
            doc["messages"] = [{"role": "user", "content": text}]
        else:
            doc["prompt"] = ([(7 * index + j) % 1000 + 1 for j in range(input_tokens)] if self.prompt == "tokens"
                             else text)
        return doc

    async def send(self, arrival, record) -> None:
        body = self.body(arrival.input_tokens, arrival.output_tokens, arrival.index)
        async with self.client().stream("POST", self.ep.path, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread())[:MAX_ERROR_BODY * 4].decode("utf-8", "replace")
                raise ConnectionError(f"HTTP {resp.status_code}: {_error_message(text)}")
            usage = await _read_stream(resp, record, self.ep.api == "chat")
        if usage:
            record.tokens = int(usage)
        if record.tokens == 0:
            raise ConnectionError("no tokens in the answer")
        record.done = time.perf_counter()


async def _read_stream(resp: httpx.Response, record, chat: bool) -> int | None:
    """Time every chunk that carries text; the usage's completion_tokens, if the server sent it."""
    usage, done = None, False
    async for line in resp.aiter_lines():
        if done or not line.startswith("data:"):
            continue  # after [DONE]: read the body to its end, so the connection goes back to the pool
        data = line[5:].strip()
        if data == "[DONE]":
            done = True
            continue
        event = json.loads(data)
        if "error" in event:
            raise ConnectionError(f"server error: {_error_message(data)}")
        u = event.get("usage")
        if u and u.get("completion_tokens"):
            usage = u["completion_tokens"]
        for c in event.get("choices") or []:
            if _has_text(c, chat):  # not the role chunk, not the bare finish chunk
                t = time.perf_counter()
                record.first = record.first or t
                record.last = t
                record.tokens += 1
                break
    if not done:
        raise ConnectionError(f"stream ended before [DONE] after {record.tokens} tokens")
    return usage


def _has_text(choice: dict, chat: bool) -> bool:
    if not chat:
        return bool(choice.get("text"))
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"))
