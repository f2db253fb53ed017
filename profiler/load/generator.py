"""Open-loop load: seeded arrivals with a bucket mix, sent to a backend, measured per request.

The same generator drives an in-process replica (runtime/replica.py) and any OpenAI-compatible
server (load/client.py), so the two modes differ only in the transport.

Arrivals are a renewal process conditioned on its count and span: N = round(rate x duration)
requests, the first at 0 and the last at (N - 1) / rate, gaps Gamma(shape k) normalized to that
span (k = 1: Poisson arrivals; k < 1 burstier). The realized rate is then the planned rate
exactly, so a short run is not failed or passed by the luck of its request count. The bucket mix
is exact too (largest-remainder counts, seeded shuffle).

Metrics (summarize): TTFT = first token - send; TPOT = (last - first token) / (tokens - 1);
SLO attainment = share of *all* requests finished within both SLOs (failed ones miss);
achieved_rps = the rate completions keep up with: offered rate x completed share / slope of
completion time against arrival time (least squares, slope floored at 1). A replica that keeps
up completes requests at their arrival pace (slope 1); an overloaded one falls further behind
with every request (slope = offered / served rate). Unlike completed / wall time, this does not
count one request's latency against a short run.
"""
from __future__ import annotations

import asyncio
import heapq
import math
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Arrival:
    t: float  # seconds after the start
    input_tokens: int
    output_tokens: int
    index: int = 0


@dataclass
class Record:
    arrival: Arrival
    scheduled: float | None = None  # perf_counter times: when it was due to be sent
    sent: float | None = None  # when its task began sending (sent - scheduled: the generator's lag)
    first: float | None = None
    last: float | None = None
    done: float | None = None
    tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.done is not None and self.tokens > 0

    @property
    def ttft_s(self) -> float:
        return self.first - self.sent

    @property
    def tpot_s(self) -> float:
        return (self.last - self.first) / (self.tokens - 1) if self.tokens > 1 else 0.0


class Backend(Protocol):
    """Also optional: reserve(n) before a run of n requests (size a connection pool), and
    `async aclose()` after it (close what the run opened)."""

    async def send(self, arrival: Arrival, record: Record) -> None:
        """Send one request; fill record.first/last/tokens/done, or raise / set record.error."""


def arrivals(routes: Sequence[tuple[int, int, float]], duration_s: float, seed: int = 0,
             shape: float = 1.0) -> list[Arrival]:
    """routes: (input_tokens, output_tokens, rps). shape: Gamma shape of the gaps (1 = Poisson)."""
    rate = sum(r for _, _, r in routes)
    if rate <= 0 or duration_s <= 0:
        return []
    rng = random.Random(seed)
    n = max(1, round(rate * duration_s))
    gaps = [rng.gammavariate(shape, 1.0) for _ in range(n - 1)]
    span, total = (n - 1) / rate, sum(gaps)
    times, acc = [0.0], 0.0
    for g in gaps:
        acc += g
        times.append(span * acc / total)
    # exact mix: largest-remainder counts per bucket
    want = [n * r / rate for _, _, r in routes]
    counts = [math.floor(w) for w in want]
    for i in sorted(range(len(routes)), key=lambda i: counts[i] - want[i])[:n - sum(counts)]:
        counts[i] += 1
    kinds = [(i_, o_) for (i_, o_, _), c in zip(routes, counts) for _ in range(c)]
    rng.shuffle(kinds)
    return [Arrival(t, i_, o_, k) for k, (t, (i_, o_)) in enumerate(zip(times, kinds))]


@dataclass
class RunResult:
    records: list[Record]
    wall_s: float
    aborted: str | None = None  # why the run stopped sending early
    notes: list[str] = field(default_factory=list)


async def drive(backends: Sequence[Backend], schedules: Sequence[list[Arrival]], drain_s: float,
                request_timeout_s: float, abort_after: int = 20) -> RunResult:
    """Send every schedule to its backend open-loop; wait for stragglers at most drain_s after the
    last arrival; stop sending after `abort_after` consecutive failures (a dead or refusing server)."""
    t0 = time.perf_counter() + 0.02
    state = {"fails": 0, "aborted": None, "feeding": True}
    records: list[Record] = []
    tasks: list[asyncio.Task] = []

    async def one(backend: Backend, rec: Record) -> None:
        rec.sent = time.perf_counter()
        try:  # asyncio.timeout, not wait_for: no second task per request
            async with asyncio.timeout(request_timeout_s):
                await backend.send(rec.arrival, rec)
        except TimeoutError:
            rec.error = rec.error or f"no answer within the {request_timeout_s:g} s request timeout"
        except asyncio.CancelledError:
            rec.error = rec.error or f"unfinished {drain_s:g} s after the last arrival"
        except Exception as e:  # noqa: BLE001 - a failed request is a result, not a crash
            rec.error = rec.error or f"{type(e).__name__}: {e}"
        if rec.ok:
            state["fails"] = 0
        elif state["feeding"]:  # failures after the last send cannot stop anything
            state["fails"] += 1
            if state["fails"] >= abort_after and state["aborted"] is None:
                state["aborted"] = f"stopped sending after {abort_after} consecutive failed requests"

    async def feed() -> None:
        """One sender for every schedule (not one per schedule): wake at the next due time, start
        every request that is due by then, sleep again."""
        due = heapq.merge(*([(a.t, k, i, a) for i, a in enumerate(s)] for k, s in enumerate(schedules)))
        spawn, now = loop.create_task, time.perf_counter
        for t, k, _, a in due:
            rec = Record(a, scheduled=t0 + t)
            records.append(rec)
            if state["aborted"]:
                rec.error = f"not sent: {state['aborted']}"
                continue
            while (delay := rec.scheduled - now()) > 0:  # a loop's timers may fire early (uvloop: ms ticks)
                await asyncio.sleep(delay)
            tasks.append(spawn(one(backends[k], rec)))

    loop = asyncio.get_running_loop()
    for b in {id(b): b for b in backends}.values():
        if hasattr(b, "reserve"):
            b.reserve(sum(len(x) for bb, x in zip(backends, schedules) if bb is b))
    try:
        await feed()
        return await _finish(records, tasks, schedules, state, t0, drain_s)
    finally:
        for b in {id(b): b for b in backends}.values():
            if hasattr(b, "aclose"):
                await b.aclose()


async def _finish(records, tasks, schedules, state, t0: float, drain_s: float) -> RunResult:
    state["feeding"] = False
    last = max((s[-1].t for s in schedules if s), default=0.0)
    left = max(0.0, t0 + last + drain_s - time.perf_counter())
    if tasks:
        _, pending = await asyncio.wait(tasks, timeout=left)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return RunResult(records, time.perf_counter() - t0, state["aborted"])


def run(backends: Sequence[Backend], schedules: Sequence[list[Arrival]], drain_s: float,
        request_timeout_s: float, abort_after: int = 20) -> RunResult:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(drive(backends, schedules, drain_s, request_timeout_s, abort_after))


def _loop_factory():
    """uvloop's event loop where it is installed (~10% less CPU a request than asyncio's own loop
    here, and a shorter lag tail), else asyncio's. GPUMIX_LOOP=asyncio forces asyncio's."""
    if os.environ.get("GPUMIX_LOOP", "").lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def percentiles(values: Sequence[float], qs=(50, 90, 99)) -> dict:
    if not values:
        return {f"p{q}": None for q in qs}
    v = sorted(values)

    def at(q: float) -> float:  # linear interpolation between closest ranks
        x = (len(v) - 1) * q / 100
        lo = math.floor(x)
        hi = min(lo + 1, len(v) - 1)
        return v[lo] + (v[hi] - v[lo]) * (x - lo)
    return {f"p{q}": round(at(q), 3) for q in qs}


def offered_rps(schedules: Sequence[list[Arrival]]) -> float:
    return sum((len(s) - 1) / s[-1].t if len(s) > 1 and s[-1].t > 0 else 0.0 for s in schedules)


def achieved_rps(records: Sequence[Record], offered: float, t0_of: Callable[[Record], float]) -> float:
    """Offered rate x completed share / slope of completion vs arrival time (slope floored at 1)."""
    done = [r for r in records if r.ok]
    if not records or not done:
        return 0.0
    if len(done) < 3:
        return offered * len(done) / len(records)
    xs = [t0_of(r) for r in done]
    ys = [r.done for r in done]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var > 0 else 1.0
    return offered * len(done) / len(records) / max(slope, 1.0)


def summarize(records: Sequence[Record], schedules: Sequence[list[Arrival]], ttft_ms: float,
              tpot_ms: float) -> dict:
    """The report's measurements for one group (all replicas' records together)."""
    done = [r for r in records if r.ok]
    within = sum(1 for r in done if r.ttft_s * 1e3 <= ttft_ms and r.tpot_s * 1e3 <= tpot_ms)
    offered = offered_rps(schedules)
    # arrivals of different replicas interleave on one clock: regress on each request's send time
    achieved = achieved_rps(records, offered, lambda r: r.sent)
    errors = Counter(r.error for r in records if r.error)
    return {
        "requests": len(records),
        "completed": len(done),
        "failed": len(records) - len(done),
        "offered_rps": round(offered, 4),
        "achieved_rps": round(achieved, 4),
        "ttft_ms": percentiles([r.ttft_s * 1e3 for r in done]),
        "tpot_ms": percentiles([r.tpot_s * 1e3 for r in done if r.tokens > 1]),
        "e2e_ms": percentiles([(r.done - r.sent) * 1e3 for r in done]),
        "slo_attainment": round(within / len(records), 4) if records else 0.0,
        "errors": [{"error": e, "count": n} for e, n in errors.most_common(5)],
    }
