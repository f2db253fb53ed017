"""The comparison baseline of bench/serve.py: `gpumix serve`'s HTTP layer as it was before issue 15
(profiler/serve/server.py at that commit, unchanged below this paragraph; not used by gpumix).

`gpumix serve`: one replica (runtime/replica.py), or several models sharing one device
(runtime/sharing.py), behind an OpenAI-compatible HTTP API.

  POST /v1/completions   {model, prompt: str | [int], max_tokens, stream, stream_options}
  GET  /v1/models, /health

The request's `model` picks the replica; it may be left out when one model is served.

Weights are random, so the text is meaningless: a string prompt becomes one token per
whitespace-separated word (crc32 of the word), generated token t is the text " t<id>", and a
request always produces exactly max_tokens tokens (there is no EOS). Streams are server-sent
events, one token a chunk, then an optional usage chunk and `data: [DONE]`. Stdlib only:
ThreadingHTTPServer, one thread per connection, HTTP/1.0-style close-delimited bodies.
"""
from __future__ import annotations

import json
import queue
import threading
import time
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gpumix.profiler.runtime.replica import EngineLoop
from gpumix.profiler.runtime.sharing import Member

MAX_BODY = 8 << 20


def tokenize(prompt, vocab: int) -> list[int]:
    if isinstance(prompt, str):
        return [zlib.crc32(w.encode()) % vocab for w in prompt.split()] or [0]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                   for t in prompt):
        return [t % vocab for t in prompt]
    raise ValueError("prompt must be a string or a non-empty list of token ids")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, loops: dict[str, EngineLoop | Member], max_seq: int,
                 request_timeout_s: float = 600.0):
        """loops: {served name: EngineLoop, or a SharedLoop's Member}."""
        self.loops, self.max_seq = dict(loops), max_seq
        self.request_timeout_s = request_timeout_s
        # one thread writes every stream's tokens: a step wakes it once, not once per request
        # (per-request wake-ups fight the engine thread for the GIL and the cores)
        self.outbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._write_streams, name="gpumix-stream-writer", daemon=True).start()
        super().__init__(addr, Handler)

    def _write_streams(self) -> None:
        while True:
            batch = [self.outbox.get()]
            while True:
                try:
                    batch.append(self.outbox.get_nowait())
                except queue.Empty:
                    break
            for stream, tok, done, err in batch:
                stream.on_event(tok, done, err)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class Handler(BaseHTTPRequestHandler):
    server: Server
    server_version = "gpumix"
    model: str  # the request's, once do_POST has read it

    def log_message(self, format, *args):  # noqa: A002 - quiet: one line per request is noise
        pass

    # --- plumbing ------------------------------------------------------------------------------

    def _json(self, status: int, doc: dict) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        self._json(status, {"error": {"message": message, "type": kind, "code": status}})

    # --- routes --------------------------------------------------------------------------------

    def do_GET(self):  # noqa: N802
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            self._json(200, {"object": "list", "data": [
                {"id": name, "object": "model", "owned_by": "gpumix", "max_model_len": self.server.max_seq}
                for name in self.server.loops]})
        elif self.path.rstrip("/") == "/health":
            dead = next((lp for lp in self.server.loops.values() if not lp.alive), None)
            if dead is None:
                self._json(200, {"status": "ok"})
            else:
                self._error(503, dead.error or "replica stopped", "server_error")
        else:
            self._error(404, f"no route {self.path}")

    def do_POST(self):  # noqa: N802
        if self.path.rstrip("/") not in ("/v1/completions", "/completions"):
            self._error(404, f"no route {self.path}")
            return
        try:
            n = int(self.headers.get("Content-Length", "0"))
            if not 0 < n <= MAX_BODY:
                raise ValueError(f"Content-Length must be 1..{MAX_BODY}")
            req = json.loads(self.rfile.read(n))
            if not isinstance(req, dict):
                raise ValueError("the body must be a JSON object")
            loops = self.server.loops
            if "model" not in req and len(loops) > 1:
                raise ValueError(f"model is required: this server serves {', '.join(loops)}")
            model = req.get("model", next(iter(loops)))
            if not isinstance(model, str) or model not in loops:
                self._error(404, f"The model `{model}` does not exist.", "NotFoundError")
                return
            self.model, loop = model, loops[model]
            prompt = tokenize(req.get("prompt"), loop.vocab)
            max_tokens = req.get("max_tokens", 16)
            if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
                raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
            if len(prompt) + max_tokens > self.server.max_seq:
                raise ValueError(f"{len(prompt)} prompt + {max_tokens} new tokens exceed the "
                                 f"{self.server.max_seq}-token context")
        except (ValueError, json.JSONDecodeError) as e:
            self._error(400, str(e))
            return
        if not loop.alive:
            self._error(503, loop.error or "replica stopped", "server_error")
            return
        rid = f"cmpl-{uuid.uuid4().hex[:16]}"
        usage = {"prompt_tokens": len(prompt), "completion_tokens": 0,
                 "total_tokens": len(prompt)}
        events: queue.Queue = queue.Queue()
        if req.get("stream"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.flush()
            stream = _Stream(self, rid, usage, bool((req.get("stream_options") or {}).get("include_usage")))
            outbox = self.server.outbox
            loop.submit(prompt, max_tokens, lambda tok, t, done, err: outbox.put((stream, tok, done, err)))
        else:
            loop.submit(prompt, max_tokens, lambda tok, t, done, err: events.put((tok, done, err)))
        if req.get("stream"):
            self._stream(stream, rid)
        else:
            self._whole(events, rid, usage)

    def _next(self, events: queue.Queue, deadline: float):
        try:
            return events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None, True, f"no token within {self.server.request_timeout_s:g} s"

    def _chunk(self, rid: str, text: str, finish: str | None) -> dict:
        return {"id": rid, "object": "text_completion", "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}

    def _stream(self, stream: "_Stream", rid: str) -> None:
        """Wait while the writer thread streams the answer (the connection closes on return)."""
        if not stream.finished.wait(self.server.request_timeout_s):
            stream.fail(f"no answer within {self.server.request_timeout_s:g} s")

    def _whole(self, events, rid, usage) -> None:
        deadline = time.monotonic() + self.server.request_timeout_s
        text = []
        while True:
            tok, done, err = self._next(events, deadline)
            if err:
                self._error(500, err, "server_error")
                return
            if done:
                break
            text.append(f" t{tok}")
        usage["completion_tokens"] = len(text)
        usage["total_tokens"] = usage["prompt_tokens"] + len(text)
        doc = self._chunk(rid, "".join(text), "length")
        self._json(200, {**doc, "usage": usage})


class _Stream:
    """One streamed answer, written by the server's writer thread."""

    def __init__(self, handler: Handler, rid: str, usage: dict, include_usage: bool):
        self.handler, self.rid, self.usage, self.include_usage = handler, rid, usage, include_usage
        self.finished = threading.Event()

    def _send(self, doc) -> None:
        data = doc if isinstance(doc, str) else json.dumps(doc)
        self.handler.wfile.write(f"data: {data}\n\n".encode())

    def fail(self, message: str) -> None:
        if not self.finished.is_set():
            try:
                self._send({"error": {"message": message, "type": "server_error", "code": 500}})
            except OSError:
                pass
            self.finished.set()

    def on_event(self, tok, done: bool, err: str | None) -> None:
        if self.finished.is_set():
            return
        h, name = self.handler, self.handler.model
        try:
            if err:
                self.fail(err)
                return
            if done:
                self._send(h._chunk(self.rid, "", "length"))
                if self.include_usage:
                    u = {**self.usage, "total_tokens": self.usage["prompt_tokens"] + self.usage["completion_tokens"]}
                    self._send({"id": self.rid, "object": "text_completion", "model": name, "choices": [], "usage": u})
                self._send("[DONE]")
                self.finished.set()
                return
            self.usage["completion_tokens"] += 1
            self._send(h._chunk(self.rid, f" t{tok}", None))
        except OSError:  # the client left; the engine finishes the request (no cancellation)
            self.finished.set()


def start(loop: EngineLoop, model_name: str, max_seq: int, host: str = "127.0.0.1", port: int = 0,
          request_timeout_s: float = 600.0) -> tuple[Server, threading.Thread]:
    """Serve in a background thread (tests, validate); `server.shutdown()` stops it."""
    server = Server((host, port), {model_name: loop}, max_seq, request_timeout_s)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              name="gpumix-serve", daemon=True)
    thread.start()
    return server, thread
