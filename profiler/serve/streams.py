"""From engine threads to the event loop: every request's tokens, a bounded buffer per stream, and
the engines' health.

Design: an engine thread calls a request's callback once per token (runtime/replica.py). The
callback appends to one queue per server (Hub) and, only when no drain is pending already, wakes
the event loop with call_soon_threadsafe: a step that yields tokens for 256 requests wakes the loop
once, not 256 times. The drain hands each event to its TokenStream, whose buffer the HTTP writer
empties (several tokens in one write when it fell behind). A stream whose writer is stuck in a send
(the client stopped reading: the socket and the transport's buffer are full) while its buffer passes
`limit` events is cut off: its request is cancelled in the engine and its connection aborted. The
engine thread never waits on a client, so one slow reader costs only its own buffer.

Health (Watch, one per served model): dead when the engine says so (a step raised, a TP rank
died); stalled when requests are in flight and no event came for `stall_s`.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from gpumix.profiler.serve.metrics import ModelMetrics

# (token or None, perf_counter time, done, error) as runtime/replica.py's OnToken gets them
Event = tuple


class Watch:
    """One served model's engine door, its requests in flight and the time of its last event."""

    def __init__(self, door, stall_s: float):
        self.door, self.stall_s = door, stall_s
        self.inflight = 0
        self.last_event = time.monotonic()

    def trouble(self) -> str | None:
        if not self.door.alive:
            return self.door.error or "replica stopped"
        idle = time.monotonic() - self.last_event
        if self.inflight and idle > self.stall_s:
            return f"engine stalled: no token for {idle:.0f} s with {self.inflight} requests in flight"
        return None


class TokenStream:
    """One request's events on the event loop. `take()` waits for the next events."""

    def __init__(self, hub: "Hub", watch: Watch, metrics: ModelMetrics, n_prompt: int, limit: int):
        self.hub, self.watch, self.metrics, self.n_prompt, self.limit = hub, watch, metrics, n_prompt, limit
        self.events: deque[Event] = deque()
        self.arrived = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.tokens = 0
        self.finished = False  # the engine's last event came
        self.closed = False  # the writer is gone, or the stream was cut off
        self.writing = False  # the writer is inside a send: a full socket keeps it there
        self.abort: Callable[[], None] | None = None  # closes the connection (the HTTP layer sets it)
        self._waiter: asyncio.Future | None = None
        self.on_token = lambda tok, t, done, err: hub.post(self, (tok, t, done, err))
        watch.inflight += 1
        metrics.waiting.inc()

    def submit(self, prompt: list[int], max_tokens: int) -> None:
        self.watch.door.submit(prompt, max_tokens, self.on_token)

    # --- on the event loop -------------------------------------------------------------------

    def push(self, ev: Event, now: float) -> None:
        self.watch.last_event = now
        tok, t, done, err = ev
        m = self.metrics
        if done:
            self._end("abort" if err else "length", t)
        else:
            if self.first is None:
                self.first = t
                m.waiting.dec()
                m.running.inc()
                m.ttft.observe(max(0.0, t - self.arrived))
            else:
                m.itl.observe(t - self.last)
            self.last = t
            self.tokens += 1
            m.generation_tokens.inc()
        if self.closed:
            return
        self.events.append(ev)
        if self.writing and len(self.events) > self.limit:
            self.cut_off()
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, reason: str, t: float) -> None:
        if self.finished:
            return
        self.finished = True
        self.watch.inflight -= 1
        m = self.metrics
        (m.running if self.first is not None else m.waiting).dec()
        if reason == "length":
            m.prompt_tokens.inc(self.n_prompt)
            m.success_length.inc()
            m.e2e.observe(max(0.0, t - self.arrived))
            if self.tokens > 1:
                m.tpot.observe((self.last - self.first) / (self.tokens - 1))
        else:
            m.success_abort.inc()

    async def take(self, timeout_s: float) -> list[Event]:
        """The events so far (at least one), or [] after timeout_s without any."""
        if not self.events:
            self._waiter = self.hub.loop.create_future()
            try:
                await asyncio.wait_for(self._waiter, timeout_s)
            except asyncio.TimeoutError:
                return []
            finally:
                self._waiter = None
        out = list(self.events)
        self.events.clear()
        return out

    def cut_off(self) -> None:
        """The client is not reading: cancel the request in the engine and drop the connection."""
        self.hub.cut += 1
        self.close()
        if self.abort is not None:
            self.abort()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        """The writer is done with this stream; an unfinished request is cancelled in the engine."""
        if self.closed:
            return
        self.closed = True
        self.events.clear()
        self.hub.streams.discard(self)
        if not self.finished:
            cancel = getattr(self.watch.door, "cancel", None)
            if cancel is not None:
                cancel(self.on_token)


class Hub:
    """The server's one queue from engine threads to its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int):
        self.loop, self.limit = loop, limit
        self.streams: set[TokenStream] = set()
        self.cut = 0  # streams cut off (slow readers)
        self._queue: deque = deque()
        self._armed = False

    def open(self, watch: Watch, metrics: ModelMetrics, n_prompt: int) -> TokenStream:
        s = TokenStream(self, watch, metrics, n_prompt, self.limit)
        self.streams.add(s)
        return s

    def post(self, stream: TokenStream, ev: Event) -> None:
        """On an engine thread: queue the event; wake the loop unless a drain is pending."""
        self._queue.append((stream, ev))
        if not self._armed:
            self._armed = True
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop is closed: the server is gone
                pass

    def _drain(self) -> None:
        self._armed = False  # before draining: an event queued from here on schedules a new drain
        now = time.monotonic()
        q = self._queue
        while q:
            stream, ev = q.popleft()
            stream.push(ev, now)

    def fail_all(self, reason: str) -> None:
        """Shutdown: every open stream gets an error event now (its request is cancelled)."""
        for s in list(self.streams):
            if not s.closed and not s.finished:
                s.push((None, time.perf_counter(), True, reason), time.monotonic())
                cancel = getattr(s.watch.door, "cancel", None)
                if cancel is not None:
                    cancel(s.on_token)
