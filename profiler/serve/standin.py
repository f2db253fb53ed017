"""An engine stand-in with the EngineLoop surface the server uses (vocab, alive, error, submit,
cancel), and no model: for the HTTP tests and bench/serve.py, where the transport is what is
measured and a real model would only add noise.

One thread steps every running request by one token per step, as the runtime's decode step does;
`step_s` is the time a step costs (0: nothing, the engine is as fast as Python allows). `kill()`
makes it dead as a crashed device would (every waiter fails); `stall()` makes it hang in a step
(alive, but no token comes: what /health must call stalled).
"""
from __future__ import annotations

import queue
import threading
import time

from gpumix.profiler.runtime.replica import OnToken


class StandInLoop:
    def __init__(self, vocab: int = 1000, step_s: float = 0.0):
        self.vocab, self.step_s = vocab, step_s
        self.error: str | None = None
        self.steps = 0
        self._inbox: queue.Queue = queue.Queue()
        self._running: dict[int, list] = {}  # id(on_token) -> [on_token, tokens left, next token]
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpumix-standin", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def submit(self, prompt: list[int], max_new_tokens: int, on_token: OnToken) -> None:
        if not self.alive:
            on_token(None, time.perf_counter(), True, self.error or "replica stopped")
            return
        self._inbox.put(("add", on_token, max_new_tokens, sum(prompt) % self.vocab))

    def cancel(self, on_token: OnToken) -> None:
        self._inbox.put(("cancel", on_token))

    def kill(self, reason: str = "replica killed") -> None:
        self._inbox.put(("kill", reason))

    def stall(self) -> None:
        self._stalled.set()

    def stop(self) -> None:
        self._stop.set()
        self._stalled.clear()
        self._inbox.put(None)
        self._thread.join(10)

    def _take(self, item) -> None:
        kind = item[0]
        if kind == "add":
            _, cb, n, first = item
            self._running[id(cb)] = [cb, n, first]
        elif kind == "cancel":
            slot = self._running.pop(id(item[1]), None)
            if slot:
                slot[0](None, time.perf_counter(), True, "cancelled")
        elif kind == "kill":
            raise RuntimeError(item[1])

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self._inbox.get(timeout=0.5) if not self._running else self._inbox.get_nowait()
                    while item is not None:
                        self._take(item)
                        item = self._inbox.get_nowait()
                except queue.Empty:
                    pass
                while self._stalled.is_set() and not self._stop.is_set():
                    time.sleep(0.05)
                if self._running and not self._stop.is_set():
                    self._step()
        except Exception as e:  # noqa: BLE001 - dead, as the runtime's EngineLoop reports it
            self.error = f"replica died: {type(e).__name__}: {e}"
        t = time.perf_counter()
        for cb, _, _ in self._running.values():
            cb(None, t, True, self.error or "replica stopped")
        self._running.clear()

    def _step(self) -> None:
        if self.step_s:
            time.sleep(self.step_s)
        self.steps += 1
        t = time.perf_counter()
        for key, slot in list(self._running.items()):
            cb, left, tok = slot
            cb(tok, t, False, None)
            slot[1], slot[2] = left - 1, (tok + 1) % self.vocab
            if left <= 1:
                del self._running[key]
                cb(None, t, True, None)
