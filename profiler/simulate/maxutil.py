"""`gpumix simulate --find-max-utilization`: per model, the highest utilization whose tails hold.

A model's utilization u is its load relative to the capacity the plan sized it with: in every group
hosting it, each replica (set) gets u x its predicted capacity at the group's bucket mix
(per-replica rps / planned_utilization, from the routes' max_rps), the other models of a sharing
set staying at their planned load (x --rate-scale). Holding means, over all of the model's requests
in that run and in every group hosting it (each group on its own requests: a slow group cannot
hide behind a fast one), p99 TTFT <= the SLO's TTFT and p99 TPOT <= its TPOT, a request that did
not finish counting as infinitely slow (so an overloaded run cannot hold on the few it finished).
The p99s reported are the worst group's.

Search: u = 1 first (the most a workload's max_utilization may be); else bisection on (0, 1] for
BISECT_STEPS steps, keeping the highest u that held (None when even the lowest tried failed). The
tail is noisy, so it is not strictly monotone in u; bisection takes the first crossing it finds.
Cost: each step simulates the model's replicas only, at most MAX_SETS per group (replicas of a
group are alike; more only narrow the p99).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpumix.profiler.simulate.run import Setup, SimOptions, run_plan_router, unit_keys

BISECT_STEPS = 7
LOWEST = 0.02
MAX_SETS = 8


@dataclass(frozen=True)
class Found:
    model: str
    planned_utilization: float | None  # the plan's, highest over the model's groups
    max_utilization: float | None  # None: no utilization tried held
    ttft_p99_ms: float | None  # at max_utilization
    tpot_p99_ms: float | None
    tried: int
    reason: str = ""

    def to_dict(self) -> dict:
        return {"model": self.model, "planned_utilization": self.planned_utilization,
                "max_utilization": self.max_utilization, "ttft_p99_ms": self.ttft_p99_ms,
                "tpot_p99_ms": self.tpot_p99_ms, "runs": self.tried, **({"reason": self.reason} if self.reason else {})}


def _p99(values: np.ndarray) -> float:
    return float(np.percentile(values, 99)) if len(values) else math.inf


def tails(results: dict, model: str, horizon: float) -> tuple[float, float]:
    """(p99 TTFT, p99 TPOT) in ms over the model's requests, unfinished ones infinite."""
    ttft, tpot = [], []
    for parts in results.values():
        for r in parts:
            if r["model"] != model:
                continue
            ok = (r["error"] == 0) & (r["done"] <= horizon)
            tt = np.where(ok, (r["first"] - r["t"]) * 1e3, np.inf)
            multi = r["n_out"] > 1
            tp = np.where(ok, (r["done"] - r["first"]) / np.maximum(r["n_out"] - 1, 1) * 1e3, np.inf)
            ttft.append(tt)
            tpot.append(tp[multi | ~ok])
    return (_p99(np.concatenate(ttft)) if ttft else math.inf, _p99(np.concatenate(tpot)) if tpot else math.inf)


def find_model(setup: Setup, opts: SimOptions, model: str, tick=lambda n: None) -> Found:
    hosting = [g for g in setup.groups if any(t.model == model for t in g.active)]
    planned = [t.planned_utilization for g in hosting for t in g.active if t.model == model]
    if not hosting:
        return Found(model, None, None, None, None, 0, "no load routed to it in the plan")
    if any(u is None or u <= 0 for u in planned):
        return Found(model, None, None, None, None, 0, "the plan's routes give no max_rps to scale by")
    slo = next(t for g in hosting for t in g.active if t.model == model).demand.slo
    keys = unit_keys(setup, only={model}, max_sets=MAX_SETS)
    horizon = opts.duration_s + opts.drain_s
    runs = 0

    def holds(u: float) -> tuple[bool, float, float]:
        nonlocal runs
        runs += 1
        # a model's factor differs per group (each group's own planned utilization): scale by group
        results = {}
        for g in hosting:
            t = next(t for t in g.active if t.model == model)
            factor = u / t.planned_utilization / opts.rate_scale
            gi = setup.groups.index(g)
            mine = [k for k in keys if k[0] == gi]
            results.update(run_plan_router(setup, opts, mine, {model: factor}, lambda n: None))
        tick(1)
        worst = [tails({k: v for k, v in results.items() if k[0] == gi}, model, horizon)
                 for gi in {k[0] for k in results}]
        tt, tp = max(w[0] for w in worst), max(w[1] for w in worst)
        return tt <= slo.ttft_ms and tp <= slo.tpot_ms, tt, tp

    best = None
    ok, tt, tp = holds(1.0)
    if ok:
        best = (1.0, tt, tp)
    else:
        lo, hi = 0.0, 1.0
        for _ in range(BISECT_STEPS):
            mid = max((lo + hi) / 2, LOWEST)
            ok, tt, tp = holds(mid)
            if ok:
                lo, best = mid, (mid, tt, tp)
            else:
                hi = mid
            if mid <= LOWEST and not ok:
                break
    top = max(planned)
    if best is None:
        return Found(model, round(top, 4), None, None, None, runs,
                     f"p99 TTFT or TPOT misses the SLO even at {LOWEST:g} utilization")
    u, tt, tp = best
    return Found(model, round(top, 4), math.floor(u * 1000) / 1000, round(tt, 3), round(tp, 3), runs)


def find_all(setup: Setup, opts: SimOptions, progress=lambda total, label: (lambda n: None)) -> list[Found]:
    models = [m.name for m in setup.workload.models if any(t.model == m.name for g in setup.groups for t in g.active)]
    tick = progress(len(models) * (BISECT_STEPS + 1), "utilization runs")
    return [find_model(setup, opts, m, tick) for m in models]


def overrides_doc(raw: dict, found: list[Found], source: str, out: str) -> dict:
    """The workload document `raw` with each found model's max_utilization set; relative `config`
    paths are rewritten so they still point at the same files from `out`'s folder."""
    import os
    from pathlib import Path

    by = {f.model: f.max_utilization for f in found if f.max_utilization is not None}
    src_dir, out_dir = Path(source).resolve().parent, Path(out).resolve().parent
    models = []
    for m in raw.get("models") or []:
        m = dict(m)
        if isinstance(m.get("config"), str) and not Path(m["config"]).is_absolute() and src_dir != out_dir:
            m["config"] = os.path.relpath(src_dir / m["config"], out_dir)
        if m.get("name") in by:
            m["max_utilization"] = by[m["name"]]
        models.append(m)
    return {**raw, "models": models}
