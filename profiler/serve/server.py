"""`gpumix serve`: one replica (runtime/replica.py), or several models sharing one device
(runtime/sharing.py), behind an OpenAI-compatible HTTP API on FastAPI + uvicorn.

  app.py       the routes: completions, chat completions, models, health, metrics; auth; limits
  protocol.py  request models (strict pydantic), tokens from prompts and messages, answer shapes
  streams.py   engine threads -> event loop, a bounded buffer per stream, engine health
  metrics.py   Prometheus under vLLM's names
  http.py      uvicorn: the socket, the incomplete-request guard, graceful shutdown
  standin.py   an engine stand-in (no model) for tests and bench/serve.py

Server ties them together: `serve()` in the foreground (signals: graceful stop), or `start()` on
a background thread for tests and benches, `shutdown()` to stop it.
"""
from __future__ import annotations

import asyncio

from gpumix.profiler.serve import http
from gpumix.profiler.serve.app import Limits, ServeState, build_app
from gpumix.profiler.serve.protocol import tokenize  # noqa: F401 - the prompt rule, for callers

__all__ = ["Limits", "Server", "start", "tokenize"]


class Server:
    """doors: {served name: EngineLoop, a SharedLoop's Member, or anything with their surface
    (vocab, alive, error, submit, cancel)}. Binds at once: OSError when the address is taken."""

    def __init__(self, doors: dict, max_seq: int, host: str = "127.0.0.1", port: int = 0,
                 api_key: str | None = None, limits: Limits = Limits()):
        self.state = ServeState(doors, max_seq, api_key, limits)
        self.app = build_app(self.state)
        self.sock = http.bind(host, port, limits.backlog)
        cfg = http.config(self.app, limits.read_timeout_s, limits.keep_alive_s, limits.backlog,
                          limits.shutdown_grace_s)
        self.uvicorn = http.Uvicorn(cfg, self.state.begin_shutdown)
        self._running: http.Running | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve(self) -> None:
        """In the foreground until SIGTERM/SIGINT (a graceful stop)."""
        try:
            asyncio.run(self.uvicorn.serve(sockets=[self.sock]))
        finally:
            self.sock.close()

    def start(self) -> "Server":
        self._running = http.Running(self.uvicorn, self.sock).start()
        return self

    def shutdown(self, timeout_s: float = 30.0) -> None:
        if self._running is not None:
            self._running.stop(timeout_s)
            self._running = None
        self.sock.close()

    def server_close(self) -> None:
        self.sock.close()


def start(loop, model_name: str, max_seq: int, host: str = "127.0.0.1", port: int = 0,
          request_timeout_s: float = 600.0, api_key: str | None = None, limits: Limits | None = None):
    """Serve one engine on a background thread (tests, validate): (server, its thread)."""
    limits = limits or Limits(request_timeout_s=request_timeout_s)
    server = Server({model_name: loop}, max_seq, host, port, api_key, limits).start()
    return server, server._running.thread
