"""The simulated replica: continuous batching as profiler.runtime.engine schedules it, on a clock.

One ModelEngine is one model's engine on a replica (or on a sharing set); a Unit is the replica
(set) stepping its engines in turn, as profiler.runtime.sharing.Colocated does.

Scheduling (the runtime's Scheduler): between steps, arrived requests join a FIFO queue. A step is
  prefill  when a request waits and a slot is free (and, here, its in + out tokens fit the KV
           tokens left): the oldest waiting request's prompt alone; its first token at the step's end
  decode   otherwise: every running request gets one token at the step's end
A request holds its slot (and KV reservation) from its prefill to its last token; nothing is
preempted. A request longer than the whole cache fails at once, as the runtime refuses it.

Speed: between two events that change the batch (a request finishing, an arrival that can be
prefilled, another model of the set getting work) every decode step has the same batch and a
context one token longer than the last, so the k steps are jumped at once:
  S(k) = k alpha + beta (k c0 + k (k - 1) / 2)
and the k that first reaches an arrival time solves that quadratic. Requests carry a step counter
instead of a token count, so a jump is O(1) and an event O(log B).
"""
from __future__ import annotations

import heapq
import math
from collections import deque

from gpumix.profiler.simulate.steps import StepModel

INF = math.inf
TOO_LONG = 1  # error codes in ModelEngine.error
UNFINISHED = 2


class ModelEngine:
    """One model's engine on one replica; arrivals are appended in time order (push)."""

    def __init__(self, steps: StepModel):
        self.steps = steps
        self.padded = steps.padded
        self.kv_cap = steps.kv_tokens
        # per request (index = arrival order on this engine)
        self.t_arr: list[float] = []
        self.n_in: list[int] = []
        self.n_out: list[int] = []
        self.admit: list[float] = []
        self.first: list[float] = []
        self.done: list[float] = []
        self.error: list[int] = []
        self.i = 0  # next request not yet queued
        self.waiting: deque[int] = deque()
        # running requests
        self.live: dict[int, int] = {}  # request -> its slot
        self.base: dict[int, int] = {}  # request -> decode counter at its admission
        self.fin: list[tuple[int, int]] = []  # heap (counter at which it has all tokens, request)
        self.keys: list[tuple[int, int]] = []  # lazy max-heap (-(n_in - base), request): the longest context
        self.rows: list[int] = []  # lazy max-heap of used slots (-slot)
        self.used = bytearray(steps.n_slots)
        self.free = list(range(steps.n_slots))
        self.counter = 0  # decode steps run
        self.s_key = 0  # sum over running of (n_in - base)
        self.kv_used = 0
        self.steps_run = 0
        self.events = 0

    def push(self, t: float, n_in: int, n_out: int) -> None:
        self.t_arr.append(t)
        self.n_in.append(n_in)
        self.n_out.append(n_out)
        self.admit.append(INF)
        self.first.append(INF)
        self.done.append(INF)
        self.error.append(0)

    # --- state ---------------------------------------------------------------------------------

    def queue(self, t: float) -> None:
        """Requests that arrived by t join the waiting queue (the engine loop's inbox, between steps)."""
        i, n, t_arr = self.i, len(self.t_arr), self.t_arr
        while i < n and t_arr[i] <= t:
            if self.n_in[i] + self.n_out[i] > self.kv_cap:
                self.error[i] = TOO_LONG
                self.admit[i] = t_arr[i]  # refused at once: it never waits
            else:
                self.waiting.append(i)
            i += 1
        self.i = i

    def busy(self) -> bool:
        return bool(self.waiting) or bool(self.live)

    def next_arrival(self) -> float:
        return self.t_arr[self.i] if self.i < len(self.t_arr) else INF

    def can_prefill(self) -> bool:
        if not self.waiting or not self.free:
            return False
        j = self.waiting[0]
        return self.kv_used + self.n_in[j] + self.n_out[j] <= self.kv_cap

    def interrupt(self) -> float:
        """When this engine's own next arrival would make the next step a prefill (inf: never)."""
        if self.waiting or not self.free:
            return INF  # a queue already waits on a slot; a new arrival changes nothing
        return self.next_arrival()

    # --- one scheduling decision ---------------------------------------------------------------

    def step(self, t: float, until: float, max_steps: float = INF) -> float:
        """Run one prefill, or decode steps until the batch changes, `until` is reached or
        max_steps ran; returns the clock after them. Requires busy()."""
        self.events += 1
        if self.can_prefill():
            j = self.waiting.popleft()
            self.admit[j] = t
            t += self.steps.prefill_s(self.n_in[j])
            self.first[j] = t
            self.steps_run += 1
            n_out = self.n_out[j]
            if n_out <= 1:
                self.done[j] = t
                return t
            slot = heapq.heappop(self.free)
            self.used[slot] = 1
            self.live[j] = slot
            b = self.counter
            self.base[j] = b
            key = self.n_in[j] - b
            self.s_key += key
            self.kv_used += self.n_in[j] + n_out
            heapq.heappush(self.fin, (b + n_out - 1, j))
            if self.padded:
                heapq.heappush(self.keys, (-key, j))
                heapq.heappush(self.rows, -slot)
            return t
        # decode: running batch is fixed until the next finish
        live = self.live
        n_run = len(live)
        c = self.counter
        if self.padded:
            keys, rows, used = self.keys, self.rows, self.used
            while keys[0][1] not in live:
                heapq.heappop(keys)
            while not used[-rows[0]]:
                heapq.heappop(rows)
            batch = 1 - rows[0]
            c0 = c - keys[0][0]
        else:
            batch = n_run
            c0 = c + self.s_key / n_run
        alpha, beta = self.steps.decode_line(batch)
        k = self.fin[0][0] - c
        if k > max_steps:
            k = int(max_steps)
        gap = until - t
        if gap < INF:
            # smallest k' >= 1 with S(k') >= gap
            if gap <= 0:
                kk = 1
            elif beta <= 0:
                kk = max(1, math.ceil(gap / alpha - 1e-12))
            else:
                p = alpha + beta * (c0 - 0.5)
                kk = max(1, math.ceil((-p + math.sqrt(p * p + 2 * beta * gap)) / beta - 1e-9))
                if kk * alpha + beta * (kk * c0 + kk * (kk - 1) / 2) < gap:
                    kk += 1
            if kk < k:
                k = kk
        t += k * alpha + beta * (k * c0 + k * (k - 1) / 2)
        c += k
        self.counter = c
        self.steps_run += k
        fin = self.fin
        while fin and fin[0][0] <= c:
            _, j = heapq.heappop(fin)
            self.done[j] = t
            slot = live.pop(j)
            self.used[slot] = 0
            heapq.heappush(self.free, slot)
            self.s_key -= self.n_in[j] - self.base.pop(j)
            self.kv_used -= self.n_in[j] + self.n_out[j]
        return t


class Unit:
    """A replica (one engine) or a sharing set (several, stepped round robin over those with work:
    profiler.runtime.sharing.Colocated). run(until) advances its clock; arrivals may be pushed
    between runs as long as they are not earlier than the last `until`."""

    def __init__(self, engines: list[ModelEngine]):
        self.engines = engines
        self.turn = deque(range(len(engines)))
        self.t = 0.0
        self.stepwise = False  # one decode step per decision (tests: the jumps must agree with it)

    def run(self, until: float, horizon: float) -> None:
        """Step while the clock is before `until` (all known arrivals by then are queued first);
        nothing starts after `horizon` (validate's drain deadline)."""
        engines, t = self.engines, self.t
        one = len(engines) == 1
        stop = min(until, horizon)
        most = 1 if self.stepwise else INF
        while True:
            for e in engines:
                e.queue(t)
            if one:
                e = engines[0]
                if not e.busy():
                    nxt = e.next_arrival()
                    if nxt > stop:
                        break
                    t = max(t, nxt)
                    continue
                if t >= stop:
                    break
                t = e.step(t, min(e.interrupt(), stop), most)
                continue
            busy = [k for k in range(len(engines)) if engines[k].busy()]
            if not busy:
                nxt = min(e.next_arrival() for e in engines)
                if nxt > stop:
                    break
                t = max(t, nxt)
                continue
            if t >= stop:
                break
            turn = self.turn
            while True:  # the runtime's turn: rotate past idle models to the next with work
                k = turn[0]
                turn.rotate(-1)
                if engines[k].busy():
                    break
            e = engines[k]
            if len(busy) == 1:  # alone: jump until another model gets work
                others = min((engines[o].next_arrival() for o in range(len(engines)) if o != k), default=INF)
                t = e.step(t, min(e.interrupt(), others, stop), most)
            else:
                t = e.step(t, stop, 1)
        self.t = t

    def outstanding(self) -> int:
        """Requests routed here and not finished (queued, waiting or running): least-loaded's load."""
        return sum(len(e.t_arr) - e.i + len(e.waiting) + len(e.live) for e in self.engines)
