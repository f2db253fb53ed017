"""A shared replica: several models' engines on one device (or one TP group), one thread stepping
them one step at a time, so the models compete for the device's time as the plan's time-fraction
model assumes (docs/sharing.md: while a model runs it has the set to itself).

Policy: round robin over the models with work: each step runs the next such model's engine (a
prefill of one waiting request or a decode of its whole running batch), so a busy model never
starves another and an idle one costs nothing. There is no co-batching across models: their
weights differ.

Mechanism: SharedLoop is an EngineLoop (inbox, callbacks, kill, stop, failing every waiter when a
step raises) whose engine is a Colocated set of engines; a request names its model. Member(loop,
model) is one model's door into it with the EngineLoop surface a ReplicaBackend or the HTTP server
uses (vocab, submit, alive, error). A step that raises kills the whole replica: the models share
the device.
"""
from __future__ import annotations

import time
from collections import deque

from gpumix.profiler.runtime.replica import EngineLoop, OnToken, build_engine

HEARTBEAT_S = 0.5  # idle TP members ping their ranks this often while other members run


class Colocated:
    """The engines of one device, keyed by model; `step()` runs the next one with work."""

    def __init__(self, engines: dict):
        self.engines = dict(engines)
        self._turn = deque(self.engines)
        self._last_beat = time.monotonic()

    @property
    def scheduler(self) -> "Colocated":  # EngineLoop asks engine.scheduler.idle()
        return self

    def idle(self) -> bool:
        return all(e.scheduler.idle() for e in self.engines.values())

    def heartbeat(self, only_idle: bool = False) -> None:
        for e in self.engines.values():
            if not only_idle or e.scheduler.idle():
                e.heartbeat()
        self._last_beat = time.monotonic()

    def step(self) -> tuple[str | None, list, list]:
        """(model, requests that got a token, requests that finished) of one engine step."""
        for _ in range(len(self._turn)):
            model = self._turn[0]
            self._turn.rotate(-1)
            engine = self.engines[model]
            if not engine.scheduler.idle():
                if time.monotonic() - self._last_beat > HEARTBEAT_S:
                    self.heartbeat(only_idle=True)
                return (model, *engine.step_batch())
        return None, [], []

    def close(self) -> None:
        for e in self.engines.values():
            e.close()


class SharedLoop(EngineLoop):
    """engines: {model: Engine | TPEngine} built on one device; vocabs: {model: vocab size}."""

    def __init__(self, engines: dict, vocabs: dict[str, int]):
        super().__init__(Colocated(engines), 0)
        self.vocabs = dict(vocabs)
        self.steps = {m: 0 for m in engines}  # engine steps per model, for the report

    @property
    def models(self) -> list[str]:
        return list(self.vocabs)

    def member(self, model: str) -> "Member":
        if model not in self.vocabs:
            raise KeyError(f"{model} is not hosted here ({', '.join(self.vocabs)})")
        return Member(self, model)

    def submit_to(self, model: str, prompt: list[int], max_new_tokens: int, on_token: OnToken) -> None:
        with self._lock:
            if self.error is not None or self._stop.is_set():
                on_token(None, time.perf_counter(), True, self.error or "replica stopped")
                return
            self._inbox.put((prompt, max_new_tokens, on_token, model))  # on_token at [2], as EngineLoop's

    def submit(self, prompt, max_new_tokens, on_token) -> None:
        raise TypeError("a shared replica needs the model: use member(model).submit or submit_to")

    def _admit(self, item) -> None:
        if item[0] == "kill":
            raise RuntimeError(item[1])
        if item[0] == "cancel":
            self._cancel(item[1])
            return
        prompt, n, on_token, model = item
        try:
            rid = self.engine.engines[model].add([t % self.vocabs[model] for t in prompt], n)
        except ValueError as e:  # longer than the cache: this request fails, the replica lives
            on_token(None, time.perf_counter(), True, str(e))
            return
        self._subscribers[(model, rid)] = on_token

    def _cancel_request(self, key) -> None:
        model, rid = key
        self.engine.engines[model].scheduler.cancel(rid)

    def _step(self) -> None:
        model, stepped, finished = self.engine.step()
        if model is None:
            return
        self.steps[model] += 1
        t = time.perf_counter()
        for req in stepped:
            self._subscribers[(model, req.id)](req.output[-1], t, False, None)
        for req in finished:
            self._subscribers.pop((model, req.id))(None, t, True, None)


def build_shared(specs: dict) -> SharedLoop:
    """A SharedLoop (not started) of one engine per {model: ReplicaSpec}, all on the specs' device;
    if one cannot be built, the ones already built are closed (TP: their ranks stopped)."""
    engines = {}
    try:
        for m, spec in specs.items():
            engines[m] = build_engine(spec)
    except BaseException:
        for e in engines.values():
            e.close()
        raise
    return SharedLoop(engines, {m: s.args["vocab"] for m, s in specs.items()})


class Member:
    """One model's door into a SharedLoop: the EngineLoop surface ReplicaBackend and the server use."""

    def __init__(self, loop: SharedLoop, model: str):
        self.loop, self.model = loop, model
        self.vocab = loop.vocabs[model]

    @property
    def alive(self) -> bool:
        return self.loop.alive

    @property
    def error(self) -> str | None:
        return self.loop.error

    def submit(self, prompt: list[int], max_new_tokens: int, on_token: OnToken) -> None:
        self.loop.submit_to(self.model, prompt, max_new_tokens, on_token)

    def cancel(self, on_token: OnToken) -> None:
        self.loop.cancel(on_token)


def start_replica(specs: dict, shared: bool | None = None) -> tuple[EngineLoop, dict]:
    """Start what serves {name: ReplicaSpec} on one device (or TP group): (the loop to stop, {name:
    what to submit that model's requests to}). One model runs alone in an EngineLoop; several (or
    shared=True, a sharing group's set) step in turn in one SharedLoop, a Member each."""
    if not (len(specs) > 1 if shared is None else shared):
        ((name, spec),) = specs.items()
        loop = EngineLoop(build_engine(spec), spec.args["vocab"]).start()
        return loop, {name: loop}
    loop = build_shared(specs).start()
    return loop, {name: loop.member(name) for name in specs}
