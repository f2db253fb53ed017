"""One serving replica: the continuous-batching engine driven by its own thread.

Callers submit requests from any thread and get every generated token back through a callback
(token id, perf_counter time), then one final call with `done=True` (and `error` when the
request failed). The loop blocks while idle, so an idle replica costs nothing. If a step raises,
the replica is dead: every pending request is failed with the reason and later submits fail at
once, so nothing waits forever on a replica that will never answer.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# on_token(token, t, done, error): token is None on the final call
OnToken = Callable[[int | None, float, bool, str | None], None]


@dataclass(frozen=True)
class ReplicaSpec:
    """What to build: the model as run (profiler.runtime.model.ModelArgs as a dict) and its cache."""
    args: dict
    device: str = "cpu"
    dtype: str = "fp32"
    n_slots: int = 32
    max_seq: int = 2048
    seed: int = 0
    threads: int | None = None  # CPU threads per rank; None: torch's default (TP: cores / tp)
    tp: int = 1  # ranks: this process runs rank 0, spawned workers the rest (runtime.tp_engine)


def build_engine(spec: ReplicaSpec):
    """An Engine, or for tp > 1 a TPEngine on GPUs cuda:b..b+tp-1 (b from `device`); close() it."""
    import os

    import torch

    from gpumix.profiler.runtime.engine import Engine
    from gpumix.profiler.runtime.model import DTYPES, ModelArgs, build

    threads = spec.threads or (max(1, (os.cpu_count() or 1) // spec.tp) if spec.tp > 1 else None)
    if spec.device == "cpu" and threads:
        torch.set_num_threads(threads)
    dev = "cuda:0" if spec.device == "cuda" else spec.device
    if spec.tp > 1:
        from gpumix.profiler.runtime.tp_engine import TPEngine

        return TPEngine(ModelArgs(**spec.args), spec.tp, dev, DTYPES[spec.dtype], spec.n_slots,
                        spec.max_seq, spec.seed, threads)
    model = build(ModelArgs(**spec.args), dev, DTYPES[spec.dtype], spec.seed)
    return Engine(model, spec.n_slots, spec.max_seq)


class EngineLoop:
    def __init__(self, engine, vocab: int):
        self.engine = engine
        self.vocab = vocab
        self.error: str | None = None
        self._inbox: queue.Queue = queue.Queue()
        self._subscribers: dict[int, OnToken] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()  # error + inbox hand-over: no submit slips past a dying loop
        self._thread = threading.Thread(target=self._run, name="gpumix-replica", daemon=True)

    def start(self) -> "EngineLoop":
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def submit(self, prompt: list[int], max_new_tokens: int, on_token: OnToken) -> None:
        with self._lock:
            if self.error is not None or self._stop.is_set():
                on_token(None, time.perf_counter(), True, self.error or "replica stopped")
                return
            self._inbox.put((prompt, max_new_tokens, on_token))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the loop, fail what is pending, close the engine (TP: stop or kill its ranks)."""
        self._stop.set()
        self._inbox.put(None)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if not self._thread.is_alive():  # else the loop still owns its subscribers
            self._fail_all(self.error or "replica stopped")
        self.engine.close()

    def cancel(self, on_token: OnToken) -> None:
        """Stop generating for the request submitted with this callback (its client left); it gets
        one last call, done with error "cancelled". A no-op once the request has finished."""
        self._inbox.put(("cancel", on_token))

    def kill(self, reason: str = "replica killed") -> None:
        """Fault injection: the next step raises, as a crashed device would."""
        self._inbox.put(("kill", reason))

    def _admit(self, item) -> None:
        if item[0] == "kill":
            raise RuntimeError(item[1])
        if item[0] == "cancel":
            self._cancel(item[1])
            return
        prompt, n, on_token = item
        try:
            rid = self.engine.add([t % self.vocab for t in prompt], n)
        except ValueError as e:  # longer than the cache: this request fails, the replica lives
            on_token(None, time.perf_counter(), True, str(e))
            return
        self._subscribers[rid] = on_token

    def _cancel(self, on_token: OnToken) -> None:
        key = next((k for k, cb in self._subscribers.items() if cb is on_token), None)
        if key is None:
            return
        self._cancel_request(key)
        del self._subscribers[key]
        on_token(None, time.perf_counter(), True, "cancelled")

    def _cancel_request(self, key) -> None:
        self.engine.scheduler.cancel(key)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                block = self.engine.scheduler.idle()
                try:
                    item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
                    while item is not None:
                        self._admit(item)
                        item = self._inbox.get_nowait()
                except queue.Empty:
                    pass
                if self._stop.is_set():
                    break
                if self.engine.scheduler.idle():
                    self.engine.heartbeat()
                    continue
                self._step()
        except Exception as e:  # noqa: BLE001 - a dead replica reports why to every waiter
            with self._lock:
                self.error = f"replica died: {type(e).__name__}: {e}"
        self._fail_all(self.error or "replica stopped")

    def _step(self) -> None:
        stepped, finished = self.engine.step_batch()
        t = time.perf_counter()
        for req in stepped:
            self._subscribers[req.id](req.output[-1], t, False, None)
        for req in finished:
            self._subscribers.pop(req.id)(None, t, True, None)

    def _fail_all(self, reason: str) -> None:
        with self._lock:
            pending = list(self._subscribers.values())
            self._subscribers.clear()
            while True:
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
                if item is not None and item[0] not in ("kill", "cancel"):
                    pending.append(item[2])
        t = time.perf_counter()
        for cb in pending:
            cb(None, t, True, reason)


class ReplicaBackend:
    """loadgen Backend for an EngineLoop in this process: random prompt ids, tokens timed by the
    engine thread as each step finishes."""

    def __init__(self, loop: EngineLoop, seed: int = 0):
        import random

        self.loop = loop
        self.rng = random.Random(seed)

    async def send(self, arrival, record) -> None:
        import asyncio

        aloop = asyncio.get_running_loop()
        fut = aloop.create_future()

        def finish() -> None:
            if not fut.done():
                fut.set_result(None)

        def on_token(token, t, done, error) -> None:  # on the engine thread
            if not done:
                if record.first is None:
                    record.first = t
                record.last = t
                record.tokens += 1
                return
            if error:
                record.error = record.error or error
            else:
                record.done = t
            try:
                aloop.call_soon_threadsafe(finish)
            except RuntimeError:  # the run is over and its event loop closed
                pass

        prompt = [self.rng.randrange(self.loop.vocab) for _ in range(arrival.input_tokens)]
        self.loop.submit(prompt, arrival.output_tokens, on_token)
        await fut
