"""A streaming client for OpenAI-compatible `/v1/completions` (vLLM, SGLang, TGI, `gpumix serve`).

Plain asyncio streams and one connection per request, so thousands of in-flight requests cost
no threads. Prompts are `input_tokens` copies of a short word (one token in most tokenizers;
exactly one in `gpumix serve`), or token-id lists with prompt="tokens"; `ignore_eos` and
`min_tokens` (vLLM/SGLang extensions, ignored elsewhere) ask for exactly `output_tokens` tokens.
Token counts come from the final usage chunk when the server sends one, else one a chunk.
"""
from __future__ import annotations

import asyncio
import json
import ssl
import time
import urllib.parse
from dataclasses import dataclass

MAX_ERROR_BODY = 300


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path: str  # .../v1/completions

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        """http://host:port, .../v1 or .../v1/completions; ValueError if it is none of those."""
        u = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"expected http(s)://host:port[/v1], got {url!r}")
        path = u.path.rstrip("/")
        if not path.endswith("/completions"):
            path = (path if path.endswith("/v1") else path + "/v1") + "/completions"
        return cls(u.scheme, u.hostname, u.port or (443 if u.scheme == "https" else 80), path)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path.rsplit('/completions', 1)[0]}"

    @property
    def models_path(self) -> str:
        return self.path.rsplit("/completions", 1)[0] + "/models"


def list_models(ep: Endpoint, timeout_s: float = 5.0) -> list[str]:
    """Model ids from GET /v1/models; raises OSError (refused, timeout) or ValueError (bad answer)."""
    import http.client

    conn_cls = http.client.HTTPSConnection if ep.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(ep.host, ep.port, timeout=timeout_s)
    try:
        conn.request("GET", ep.models_path)
        resp = conn.getresponse()
        body = resp.read(1 << 20)
        if resp.status != 200:
            raise ValueError(f"GET {ep.models_path}: HTTP {resp.status}")
        return [m["id"] for m in json.loads(body)["data"]]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"GET {ep.models_path}: not a model list ({e})") from None
    finally:
        conn.close()


class EndpointBackend:
    """loadgen Backend: one streamed completion per arrival."""

    def __init__(self, ep: Endpoint, model: str, prompt: str = "text", word: str = "hi",
                 connect_timeout_s: float = 5.0):
        self.ep, self.model, self.prompt, self.word = ep, model, prompt, word
        self.connect_timeout_s = connect_timeout_s

    def body(self, input_tokens: int, output_tokens: int, index: int) -> bytes:
        prompt = ([(7 * index + j) % 1000 + 1 for j in range(input_tokens)] if self.prompt == "tokens"
                  else " ".join([self.word] * input_tokens))
        return json.dumps({
            "model": self.model, "prompt": prompt, "max_tokens": output_tokens,
            "min_tokens": output_tokens, "ignore_eos": True, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}).encode()

    async def send(self, arrival, record) -> None:
        ctx = ssl.create_default_context() if self.ep.scheme == "https" else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.ep.host, self.ep.port, ssl=ctx), self.connect_timeout_s)
        try:
            body = self.body(arrival.input_tokens, arrival.output_tokens, arrival.index)
            writer.write((f"POST {self.ep.path} HTTP/1.1\r\nHost: {self.ep.host}:{self.ep.port}\r\n"
                          f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
                          f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body)
            await writer.drain()
            status, headers = await _read_head(reader)
            if status != 200:
                text = (await reader.read(MAX_ERROR_BODY)).decode("utf-8", "replace")
                raise ConnectionError(f"HTTP {status}: {_error_message(text)}")
            usage = None
            async for data in _sse(_body(reader, headers)):
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    raise ConnectionError(f"server error: {_error_message(data)}")
                if event.get("usage") and not event.get("choices"):
                    usage = event["usage"].get("completion_tokens")
                    continue
                if any(c.get("text") for c in event.get("choices") or []):  # not the bare finish chunk
                    t = time.perf_counter()
                    record.first = record.first or t
                    record.last = t
                    record.tokens += 1
                if event.get("usage"):
                    usage = event["usage"].get("completion_tokens") or usage
            else:  # a server that dies mid-answer closes the stream without [DONE]
                raise ConnectionError(f"stream ended before [DONE] after {record.tokens} tokens")
            if usage:
                record.tokens = int(usage)
            if record.tokens == 0:
                raise ConnectionError("no tokens in the answer")
            record.done = time.perf_counter()
        finally:
            writer.close()


def _error_message(text: str) -> str:
    try:
        doc = json.loads(text.split("\r\n\r\n", 1)[-1])
        err = doc.get("error", doc)
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg or text)[:MAX_ERROR_BODY]
    except (json.JSONDecodeError, AttributeError):
        return text.strip()[:MAX_ERROR_BODY] or "(empty body)"


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed before a response")
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ConnectionError(f"not an HTTP response: {line[:80]!r}")
    headers = {}
    while True:
        h = await reader.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: dict):
    """The response body in pieces: chunked, Content-Length or until the server closes."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise ConnectionError("connection closed mid-stream")
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readline()
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while True:
            piece = await reader.read(65536)
            if not piece:
                return
            yield piece


async def _sse(pieces):
    """`data:` payloads of a server-sent event stream."""
    buf = b""
    async for piece in pieces:
        buf += piece
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            line = line.rstrip(b"\r")
            if line.startswith(b"data:"):
                yield line[5:].strip().decode()
    if buf.startswith(b"data:"):
        yield buf[5:].strip().decode()
