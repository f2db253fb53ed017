"""The simulation's report: validate's schema (docs/validate.md) and validate's verdict.

Per request the engine gives arrival, admission (prefill start), first-token and done times; from
them, exactly as profiler.load.generator.summarize measures a run (and checked against it in
tests/test_simulate.py):
  TTFT = first - arrival; TPOT = (done - first) / (output tokens - 1); e2e = done - arrival
  slo_attainment = share of all requests within both SLOs (failed ones miss)
  achieved_rps = offered x completed share / max(1, slope of done time on arrival time)
  percentiles: linear interpolation between closest ranks (generator.percentiles)
A request not done by the horizon (drain_s after the run, validate's default) failed, as validate
cancels it. queue_length: requests waiting for a slot when each request arrives (its own queue).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from gpumix.profiler.load.verdict import Status, status, verdict
from gpumix.profiler.simulate.engine import TOO_LONG
from gpumix.profiler.validate.groups import group_row, member_rows

QS = (50, 90, 99)


def percentiles(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {f"p{q}": None for q in QS}
    return {f"p{q}": round(float(v), 3) for q, v in zip(QS, np.percentile(values, QS))}


def queue_lengths(r: dict) -> np.ndarray:
    """Per request: requests that arrived before it on its engine and were not admitted yet."""
    n = len(r["t"])
    if n == 0:
        return np.zeros(0)
    admitted = np.sort(r["admit"])
    before = np.searchsorted(admitted, r["t"], side="right")
    return np.maximum(np.arange(n) - before, 0)


def summarize(parts: list[dict], horizon: float, ttft_ms: float, tpot_ms: float, drain_s: float) -> dict:
    """generator.summarize's keys for the requests of `parts` (one engine's results each)."""
    if not parts:
        parts = [{"t": np.zeros(0), "n_in": np.zeros(0, int), "n_out": np.zeros(0, int), "admit": np.zeros(0),
                  "first": np.zeros(0), "done": np.zeros(0), "error": np.zeros(0, np.int8), "kv_tokens": 0}]
    t = np.concatenate([p["t"] for p in parts])
    n_out = np.concatenate([p["n_out"] for p in parts])
    first = np.concatenate([p["first"] for p in parts])
    done = np.concatenate([p["done"] for p in parts])
    error = np.concatenate([p["error"] for p in parts])
    ok = (error == 0) & (done <= horizon)
    n, n_ok = len(t), int(ok.sum())
    ttft = (first - t)[ok] * 1e3
    multi = ok & (n_out > 1)
    tpot_all = np.zeros(n)
    tpot_all[multi] = (done[multi] - first[multi]) / (n_out[multi] - 1) * 1e3
    e2e = (done - t)[ok] * 1e3
    within = int((ok & ((first - t) * 1e3 <= ttft_ms) & (tpot_all <= tpot_ms)).sum())
    offered = sum((len(p["t"]) - 1) / p["t"][-1] if len(p["t"]) > 1 and p["t"][-1] > 0 else 0.0 for p in parts)
    achieved = achieved_rps(t[ok], done[ok], n, offered)
    errors = Counter()
    for p in parts:
        e = p["error"]
        long_ = int((e == TOO_LONG).sum())
        if long_:
            errors[f"longer than the replica's KV cache of {p['kv_tokens']} tokens"] += long_
        late = int(((e == 0) & ~(p["done"] <= horizon)).sum())
        if late:
            errors[f"unfinished {drain_s:g} s after the last arrival"] += late
    return {
        "requests": n, "completed": n_ok, "failed": n - n_ok,
        "offered_rps": round(offered, 4), "achieved_rps": round(achieved, 4),
        "ttft_ms": percentiles(ttft), "tpot_ms": percentiles(tpot_all[multi]), "e2e_ms": percentiles(e2e),
        "slo_attainment": round(within / n, 4) if n else 0.0,
        "queue_length": percentiles(np.concatenate([queue_lengths(p) for p in parts]).astype(float)),
        "errors": [{"error": e, "count": c} for e, c in errors.most_common(5)],
    }


def achieved_rps(sent: np.ndarray, done: np.ndarray, n: int, offered: float) -> float:
    """generator.achieved_rps on arrays (sent, done of the completed requests; n all requests)."""
    k = len(sent)
    if n == 0 or k == 0:
        return 0.0
    if k < 3:
        return offered * k / n
    mx = sent.mean()
    var = float(((sent - mx) ** 2).sum())
    slope = float(((sent - mx) * (done - done.mean())).sum()) / var if var > 0 else 1.0
    return offered * k / n / max(slope, 1.0)


def build_report(setup, opts, results: dict) -> dict:
    horizon = opts.duration_s + opts.drain_s
    crit = opts.criteria
    report = {
        "plan": str(setup.plan_path), "workload": str(setup.workload_path), "mode": "simulation",
        "load": {"arrivals": opts.arrivals, "gamma_shape": opts.gamma_shape if opts.arrivals == "gamma" else None,
                 "duration_s": opts.duration_s, "drain_s": opts.drain_s, "seed": opts.seed,
                 "rate_scale": opts.rate_scale, "router": opts.router,
                 "note": "every replica of every group is simulated (replicas_run = count)"},
        "criteria": {"min_rate_fraction": crit.min_rate_fraction, "min_slo_attainment": crit.min_slo_attainment},
        "profiles": setup.profiles_path, "notes": list(setup.notes), "groups": [], "models": [],
        "passed": False, "validated": 0, "skipped": 0, "failures": [],
    }
    if setup.plan.get("shared"):
        report["shared"] = []
    by_model: dict[str, list] = {}
    planned_by_model: dict[str, float] = {}
    events = steps = 0
    for gi, g in enumerate(setup.groups):
        rows = member_rows(g)
        parts = {t.model: [] for t in g.members}
        sets = sorted(j for (k, j) in results if k == gi)
        for j in sets:
            for r in results[(gi, j)]:
                parts[r["model"]].append(r)
                events += r["events"]
                steps += r["steps"]
        for t in g.members:
            row = rows[t.model]
            row["replicas_run"] = len(sets)
            if not t.per_replica:
                row.update(status=Status.SKIPPED, passed=None, reasons=["no load routed to this group"])
                report["skipped"] += 1
                continue
            sm = setup.steps[(g.sharing, g.index, t.model)]
            row["engine"] = sm.describe()
            slo = t.demand.slo
            row.update(summarize(parts[t.model], horizon, slo.ttft_ms, slo.tpot_ms, opts.drain_s))
            planned = t.planned_rps * opts.rate_scale * len(sets)
            row["planned_rps"] = round(t.planned_rps * opts.rate_scale, 4)
            reasons = verdict(row, planned, slo, crit)
            row.update(reasons=reasons, passed=not reasons, status=status(reasons, False))
            report["validated"] += 1
            where = f"{t.model} in {g.label}" if g.sharing else g.label
            if reasons:
                report["failures"].append(f"{where}: " + "; ".join(reasons))
            by_model.setdefault(t.model, []).extend(parts[t.model])
            planned_by_model[t.model] = planned_by_model.get(t.model, 0.0) + planned
        report["groups"] += rows.values()
        if g.sharing:
            entry = {**group_row(g), "sets_run": len(sets)}
            failed = [t.model for t in g.active if not rows[t.model]["passed"]]
            entry.update(passed=not failed, status=Status.PASSED if not failed else Status.FAILED,
                         reasons=[f"{', '.join(failed)} failed"] if failed else [])
            report["shared"].append(entry)
    for m in setup.workload.models:
        if m.name not in by_model:
            continue
        row = {"model": m.name, "groups": sum(1 for g in setup.groups if m.name in [t.model for t in g.active]),
               "planned_rps": round(planned_by_model[m.name], 4),
               "slo": {"ttft_ms": m.slo.ttft_ms, "tpot_ms": m.slo.tpot_ms}}
        row.update(summarize(by_model[m.name], horizon, m.slo.ttft_ms, m.slo.tpot_ms, opts.drain_s))
        reasons = verdict(row, planned_by_model[m.name], m.slo, crit)
        row.update(reasons=reasons, passed=not reasons, status=status(reasons, False))
        report["models"].append(row)
        if reasons:
            report["failures"].append(f"model {m.name} (all its groups): " + "; ".join(reasons))
    report["simulation"] = {"replicas": len(results), "events": events, "engine_steps": steps,
                            "horizon_s": horizon}
    report["passed"] = report["validated"] > 0 and not report["failures"]
    if report["validated"] == 0:
        report["failures"].append("no group of the plan has load to simulate")
    return report


def unit_parts(unit) -> list[dict]:
    """A run Unit's per-engine results (what summarize takes)."""
    from gpumix.profiler.simulate.run import unit_result

    return unit_result(unit)
