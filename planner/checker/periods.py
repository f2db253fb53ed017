"""check_periods: a plan with `periods` (docs/schedule.md) against its schedule.

  periods   one entry per period of the schedule, in order (index, hours as the workload says)
  each      every period's replicas pass check_plan against that period's demand and availability
            (schema, C1, C2, C3; its cost_per_hour the sum price x tp x count, its bound below it)
  starts    replicas started entering period t, recomputed per configuration from consecutive
            periods (max(0, n[c,t] - n[c,t-1]); t-1 of period 0 the last period when cyclic, an
            empty fleet otherwise): `starts` their number, `start_cost` their $ (sigma per config)
  total     total_cost = sum_t hours x cost_per_hour + sum_t start_cost; lower_bound_total <= total_cost
  peak      the top-level replicas, cost_per_hour and bound are those of horizon.peak_period
Codes: schema for the form, cost for starts and totals, bound for bounds, and check_plan's own.
"""
from __future__ import annotations

from gpumix.planner.checker.findings import ABS_TOL, Finding, close, num
from gpumix.planner.checker.plan import check_plan
from gpumix.planner.problem import config_of
from gpumix.planner.reading import quote


def check_periods(plan: dict, schedule) -> list[Finding]:
    """Violations of a periods plan against `schedule` (planner.schedule.Schedule); empty when valid."""
    if not isinstance(plan, dict):
        return [Finding("schema", "plan", "must be a JSON object")]
    try:
        return _check(plan, schedule)
    except (TypeError, KeyError, AttributeError, ValueError, IndexError, OverflowError) as e:
        return [Finding("schema", "plan", f"malformed plan ({type(e).__name__}: {quote(str(e))})")]


def _check(plan: dict, schedule) -> list[Finding]:
    periods = plan.get("periods")
    if not isinstance(periods, list):
        return [Finding("schema", "periods", f"the workload has {schedule.periods} periods; the plan has no "
                                             "`periods` list (plan it again)")]
    if len(periods) != schedule.periods:
        return [Finding("schema", "periods", f"has {len(periods)} entries, the workload {schedule.periods} periods")]
    errs: list[Finding] = []
    counts = []
    for t, entry in enumerate(periods):
        w = f"periods[{t}]"
        if not isinstance(entry, dict):
            return errs + [Finding("schema", w, "not an object")]
        if entry.get("index") != t:
            errs.append(Finding("schema", f"{w}.index", f"expected {t}, got {quote(entry.get('index'))}"))
        if not num(entry.get("hours")) or not close(entry["hours"], schedule.hours[t]):
            errs.append(Finding("schema", f"{w}.hours", f"expected {schedule.hours[t]:g}, got {quote(entry.get('hours'))}"))
        doc = {"schema_version": plan.get("schema_version"), "status": plan.get("status"),
               "cost_per_hour": entry.get("cost_per_hour"),
               "lower_bound_per_hour": entry.get("lower_bound_per_hour", 0.0), "replicas": entry.get("replicas")}
        errs += [Finding(f.code, f"{w}: {f.where}", f.message) for f in check_plan(doc, schedule.period(t))]
        groups = entry.get("replicas") if isinstance(entry.get("replicas"), list) else []
        n: dict = {}
        for g in groups:
            if isinstance(g, dict) and isinstance(g.get("count"), int) and not isinstance(g.get("count"), bool):
                c = config_of(g)
                n[c] = n.get(c, 0) + g["count"]
        counts.append(n)
    if errs:
        return errs
    errs += _starts(plan, schedule, periods, counts)
    errs += _peak(plan, periods)
    errs += _horizon(plan, schedule, periods)
    return errs


def _horizon(plan: dict, schedule, periods: list) -> list[Finding]:
    """`horizon` says what the exports schedule by (cron times, timezone, wrap): it must be the
    workload's, and each period's `gpus` the GPUs its replica groups hold."""
    horizon = plan.get("horizon") if isinstance(plan.get("horizon"), dict) else {}
    errs = []
    want = {"periods": schedule.periods, "hours": schedule.total_hours, "cyclic": schedule.cyclic,
            "timezone": schedule.timezone}
    if len(set(schedule.hours)) == 1:
        want["period_hours"] = schedule.hours[0]
    for key, v in want.items():
        got = horizon.get(key)
        same = got == v if isinstance(v, (bool, str)) else (num(got) and close(got, v))
        if not same or isinstance(got, bool) != isinstance(v, bool):
            errs.append(Finding("schema", f"horizon.{key}", f"expected {quote(v)} (the workload's), got {quote(got)}"))
    for t, entry in enumerate(periods):
        used: dict = {}
        for g in entry["replicas"]:
            used[g["gpu"]] = used.get(g["gpu"], 0) + g["tp"] * g["count"]
        got = entry.get("gpus")
        if not isinstance(got, dict) or {k: v for k, v in got.items() if v} != {k: v for k, v in used.items() if v}:
            errs.append(Finding("schema", f"periods[{t}].gpus", f"expected {quote(used)} (the GPUs of its replica "
                                                               f"groups), got {quote(got)}"))
    return errs


def _starts(plan: dict, schedule, periods: list, counts: list) -> list[Finding]:
    errs = []
    total = 0.0
    for t, entry in enumerate(periods):
        prev = schedule.previous(t)
        before = counts[prev] if prev is not None else {}
        started = {c: k - before.get(c, 0) for c, k in counts[t].items() if k > before.get(c, 0)}
        number = sum(started.values())
        cost = sum(schedule.start_cost.get(c, 0.0) * k for c, k in started.items())
        if entry.get("starts") != number:
            errs.append(Finding("cost", f"periods[{t}].starts", f"plan says {quote(entry.get('starts'))}, the replica "
                                                                f"counts start {number} (from period {prev})"))
        if "start_cost" in entry and (not num(entry["start_cost"]) or not close(entry["start_cost"], cost)):
            errs.append(Finding("cost", f"periods[{t}].start_cost", f"plan says {quote(entry['start_cost'])}, "
                                                                    f"its starts cost {cost:.6f}"))
        total += entry["cost_per_hour"] * schedule.hours[t] + cost
    got = plan.get("total_cost")
    if not num(got) or not close(got, total):
        errs.append(Finding("cost", "total_cost", f"plan says {quote(got)}, hours x cost_per_hour plus starts is "
                                                  f"{total:.6f}"))
    lb = plan.get("lower_bound_total")
    if not num(lb):
        errs.append(Finding("bound", "lower_bound_total", "missing or not a number"))
    elif num(got) and lb > got * (1 + 1e-9) + ABS_TOL:
        errs.append(Finding("bound", "lower_bound_total", f"{lb:.6f} exceeds total_cost {got:.6f}"))
    return errs


def _peak(plan: dict, periods: list) -> list[Finding]:
    horizon = plan.get("horizon") if isinstance(plan.get("horizon"), dict) else {}
    p = horizon.get("peak_period")
    if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p < len(periods):
        return [Finding("schema", "horizon.peak_period", f"must be a period index, got {quote(p)}")]
    errs = []
    if plan.get("replicas") != periods[p]["replicas"]:
        errs.append(Finding("schema", "replicas", f"must be the peak period's (periods[{p}]) replica groups"))
    if not num(plan.get("cost_per_hour")) or not close(plan["cost_per_hour"], periods[p]["cost_per_hour"]):
        errs.append(Finding("cost", "cost_per_hour", f"must be the peak period's, {periods[p]['cost_per_hour']}"))
    peak = max(periods, key=lambda e: e["cost_per_hour"])["cost_per_hour"]
    if periods[p]["cost_per_hour"] < peak - 1e-9:
        errs.append(Finding("schema", "horizon.peak_period", f"period {p} is not the dearest (one costs ${peak:.6f}/h)"))
    lb = plan.get("lower_bound_per_hour")
    if num(lb) and num(plan.get("cost_per_hour")) and lb > plan["cost_per_hour"] * (1 + 1e-9) + ABS_TOL:
        errs.append(Finding("bound", "lower_bound_per_hour", f"{lb:.6f} exceeds cost_per_hour"))
    return errs
