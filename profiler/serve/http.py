"""uvicorn under `gpumix serve`: the socket, the connection guard, and graceful shutdown.

uvicorn's h11 protocol closes idle keep-alive connections (timeout_keep_alive) but starts no timer
on a request that has not arrived whole: a client that sends half a request, a bare request line or
a TLS hello to the plain-HTTP port holds its connection forever. GuardedH11 arms a timer whenever a
request is incomplete (a new connection, bytes of a head, a body still coming) and aborts the
connection when it fires; a complete request disarms it. It also hands the app a way to abort its
connection (scope["extensions"]["gpumix.abort"]), which streams.TokenStream uses to drop a client
that stopped reading: closing would wait for a write buffer that never drains.

The socket is bound here (so a port in use is an error before anything starts, and port 0 has its
number), with a listen backlog of Limits.backlog. On SIGTERM/SIGINT uvicorn stops accepting and
waits for the requests in flight; ServeState.begin_shutdown gives streams shutdown_grace_s to finish
and then ends the rest with an error chunk, and the process exits 0.
"""
from __future__ import annotations

import asyncio
import socket
import struct
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11(H11Protocol):
    read_timeout_s = 10.0  # set per server by guarded()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._guard: asyncio.TimerHandle | None = None
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):  # a request has begun, not ended
            self._arm()
        else:
            self._disarm()

    def handle_events(self) -> None:
        super().handle_events()
        if self.scope is not None:
            self.scope.setdefault("extensions", {})["gpumix.abort"] = self.reset

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._guard is None:
            self._guard = self.loop.call_later(self.read_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _expire(self) -> None:
        self._guard = None
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
            self.reset()

    def reset(self) -> None:
        """Drop the connection now, unsent bytes and all (a reset, not a close that waits for a
        client who does not read)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()


def guarded(read_timeout_s: float) -> type[GuardedH11]:
    return type("GuardedH11", (GuardedH11,), {"read_timeout_s": read_timeout_s})


def bind(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket; OSError when the address cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class Uvicorn(uvicorn.Server):
    """uvicorn.Server whose shutdown first tells the app (begin_shutdown), and that does not re-raise
    the signal it stopped on: a graceful stop is a clean exit."""

    def __init__(self, config: uvicorn.Config, on_shutdown):
        super().__init__(config)
        self.on_shutdown = on_shutdown

    async def shutdown(self, sockets=None) -> None:
        self.on_shutdown()
        await super().shutdown(sockets)
        if hasattr(self, "_captured_signals"):
            self._captured_signals.clear()


def config(app, read_timeout_s: float, keep_alive_s: float, backlog: int, grace_s: float) -> uvicorn.Config:
    return uvicorn.Config(app, http=guarded(read_timeout_s), loop="asyncio", lifespan="off", ws="none",
                          interface="asgi3", log_level="warning", access_log=False, backlog=backlog,
                          timeout_keep_alive=keep_alive_s, timeout_graceful_shutdown=grace_s + 5.0,
                          server_header=False)


class Running:
    """A server on a background thread (tests, bench): stop() shuts it down gracefully."""

    def __init__(self, server: Uvicorn, sock: socket.socket):
        self.server, self.sock = server, sock
        self.thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])),
                                       name="gpumix-serve", daemon=True)

    def start(self, timeout_s: float = 30.0) -> "Running":
        self.thread.start()
        waited = threading.Event()
        while not self.server.started and self.thread.is_alive() and not waited.wait(0.01):
            timeout_s -= 0.01
            if timeout_s <= 0:
                raise RuntimeError("the HTTP server did not start")
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.sock.close()
