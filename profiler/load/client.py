"""A streaming client for OpenAI-compatible servers (vLLM, SGLang, TGI, hosted endpoints, `gpumix
serve`) on aiohttp: one ClientSession per run and event loop, an HTTP/1.1 keep-alive pool
(TCPConnector) sized to the requests the run may have in flight, TLS verified (the default ssl
context: system CAs, or SSL_CERT_FILE), a connect timeout and a per-read timeout, and aiohttp's C
HTTP parser. aiohttp rather than httpx: httpx cost 1-1.6 ms of CPU a request on this 2-core box,
so the open-loop generator fell behind at 1,000 req/s (docs/serving.md, "The load client").

api="completions" POSTs /v1/completions with `prompt`; api="chat" POSTs /v1/chat/completions with
one user message. Prompts are `input_tokens` copies of a short word (one token in most tokenizers;
exactly one in `gpumix serve`; chat templates add their own tokens), or token-id lists with
prompt="tokens" (completions only). `ignore_eos` and `min_tokens` (vLLM/SGLang extensions, ignored
elsewhere) ask for exactly `output_tokens` tokens. Token counts come from the usage of the final
stream chunk when the server sends one (stream_options.include_usage), else one per chunk that
carries text. An API key goes in `Authorization: Bearer`. TTFT and token times are taken when the
bytes that carry them arrive (every event of one read shares that read's time).
"""
from __future__ import annotations

import asyncio
import json
import os
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

import aiohttp
import yarl

MAX_ERROR_BODY = 300
APIS = ("completions", "chat")
PATHS = {"completions": "/completions", "chat": "/chat/completions"}
MAX_POOL = 4096  # connections one backend keeps at most


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


async def _read_at_most(resp: aiohttp.ClientResponse, n: int) -> bytes:
    """Up to n bytes of a body (an error body is bounded; the rest is never read)."""
    out = b""
    while len(out) < n:
        data = await resp.content.read(n - len(out))
        if not data:
            break
        out += data
    return out


def _ssl_context(ep: Endpoint) -> ssl.SSLContext | bool:
    return ssl.create_default_context() if ep.scheme == "https" else False


async def _list_models(ep: Endpoint, timeout_s: float) -> tuple[int, str]:
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(timeout=timeout, headers=ep.headers) as s:
        async with s.get(ep.origin + ep.models_path, ssl=_ssl_context(ep)) as resp:
            return resp.status, (await _read_at_most(resp, 1 << 20)).decode("utf-8", "replace")


def _run_sync(coro):
    """asyncio.run, or (when this thread already runs a loop) asyncio.run in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict = {}

    def work():
        try:
            box["v"] = asyncio.run(coro)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e
    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


def list_models(ep: Endpoint, timeout_s: float = 5.0) -> list[str]:
    """Model ids from GET /v1/models. Raises OSError (refused, timeout), AuthError (the key was
    refused) or ValueError (any other bad answer)."""
    try:
        status, body = _run_sync(_list_models(ep, timeout_s))
    except aiohttp.ClientConnectorError as e:  # refused, unreachable: the OS's words ("Connection refused")
        no = getattr(e.os_error, "errno", None)
        raise (OSError(no, os.strerror(no)) if no else ConnectionError(str(e))) from None
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise ConnectionError(str(e) or type(e).__name__) from None
    if status in (401, 403):
        raise AuthError(f"GET {ep.models_path}: HTTP {status}: {_error_message(body)}")
    if status != 200:
        raise ValueError(f"GET {ep.models_path}: HTTP {status}")
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
        # no total and no pool-wait limit (the generator bounds each request); a TCP/TLS connect
        # limit, and a limit on each wait for more of the answer
        self.timeout = aiohttp.ClientTimeout(total=None, connect=None, sock_connect=connect_timeout_s,
                                             sock_read=read_timeout_s)
        self.read_timeout_s = read_timeout_s
        self.pool_size = 256
        self.url = yarl.URL(ep.origin + ep.path)  # parsed once, not per request
        self._headers = {**ep.headers, "Content-Type": "application/json"}
        self._ssl = None  # one verified TLS context per backend (building one reads the CA bundle)
        self._bodies: dict[tuple[int, int], bytes] = {}  # encoded once per bucket (text prompts)
        self._client: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def reserve(self, requests: int) -> None:
        """Size the pool for a run of this many requests (open loop: each may be in flight at once)."""
        self.pool_size = max(1, min(MAX_POOL, requests))

    def client(self) -> aiohttp.ClientSession:
        """The run's session on this event loop (a session lives on one loop)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            if self._ssl is None:
                self._ssl = _ssl_context(self.ep)
            conn = aiohttp.TCPConnector(limit=self.pool_size, limit_per_host=self.pool_size, ssl=self._ssl,
                                        keepalive_timeout=60.0, ttl_dns_cache=300)
            self._client = aiohttp.ClientSession(connector=conn, headers=self._headers, timeout=self.timeout,
                                                 auto_decompress=False)
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.close()
        self._client, self._loop = None, None

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

    def payload(self, input_tokens: int, output_tokens: int, index: int) -> bytes:
        """body() as JSON bytes; text prompts do not depend on the index, so each bucket's is cached."""
        if self.prompt == "tokens":
            return json.dumps(self.body(input_tokens, output_tokens, index)).encode()
        key = (input_tokens, output_tokens)
        data = self._bodies.get(key)
        if data is None:
            data = self._bodies[key] = json.dumps(self.body(input_tokens, output_tokens, index)).encode()
        return data

    async def send(self, arrival, record) -> None:
        data = self.payload(arrival.input_tokens, arrival.output_tokens, arrival.index)
        try:
            async with self.client().post(self.url, data=data) as resp:
                if resp.status != 200:
                    text = (await _read_at_most(resp, MAX_ERROR_BODY * 4)).decode("utf-8", "replace")
                    raise ConnectionError(f"HTTP {resp.status}: {_error_message(text)}")
                usage = await _read_stream(resp, record, self.ep.api == "chat")
        except aiohttp.ServerTimeoutError as e:  # a TimeoutError too: not the generator's request timeout
            raise ConnectionError(f"read timeout ({self.read_timeout_s:g} s without data): {e}") from None
        if usage:
            record.tokens = int(usage)
        if record.tokens == 0:
            raise ConnectionError("no tokens in the answer")
        record.done = time.perf_counter()


async def _read_stream(resp: aiohttp.ClientResponse, record, chat: bool) -> int | None:
    """Time every event that carries text at the arrival of its bytes; the usage's
    completion_tokens, if the server sent it. Reads the body to its end, so the connection goes
    back to the pool."""
    usage, done, tail = None, False, b""
    async for data in resp.content.iter_any():
        t = time.perf_counter()
        if done:
            continue  # after [DONE]: drain
        lines = (tail + data).split(b"\n")
        tail = lines.pop()
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                break
            event = json.loads(payload)
            if "error" in event:
                raise ConnectionError(f"server error: {_error_message(payload.decode('utf-8', 'replace'))}")
            u = event.get("usage")
            if u and u.get("completion_tokens"):
                usage = u["completion_tokens"]
            for c in event.get("choices") or []:
                if _has_text(c, chat):  # not the role chunk, not the bare finish chunk
                    record.first = record.first or t
                    record.last = t
                    record.tokens += 1
                    break
    if not done and tail.startswith(b"data:") and tail[5:].strip() == b"[DONE]":
        done = True  # the last line came without its newline
    if not done:
        raise ConnectionError(f"stream ended before [DONE] after {record.tokens} tokens")
    return usage


def _has_text(choice: dict, chat: bool) -> bool:
    if not chat:
        return bool(choice.get("text"))
    delta = choice.get("delta") or {}
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"))
