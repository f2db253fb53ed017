"""A plan with periods as launch files a cluster follows by itself (docs/schedule.md).

  k8s       a Deployment per replica group (replicas: its fewest in any period) and, for a group
            whose count changes, a KEDA ScaledObject with one cron trigger per run of periods above
            that minimum (k8s.keda_scaled_object); a Service per model
  skypilot  a SkyServe task per group; a changing group gets service.replica_policy: min_replicas and
            max_replicas over the periods and target_qps_per_replica, the planned req/s per replica in
            its busiest period (SkyServe scales on load between the two, it has no clock)
  vllm      the group's `vllm serve` script (run it on as many replicas as the period asks)
  always    schedule.csv (period,model,gpu,tp,replicas), router-weights.json for the peak period (the
            plan's top-level groups) and router-weights-periods.json, one entry per period
Cron times: period 0 starts at 00:00 in horizon.timezone; a 24-hour horizon repeats daily, a 168-hour
one weekly from Monday 00:00. Other horizons, and periods that do not start on a whole minute, have
no cron form: the k8s export refuses them (exit 2); the other formats do not need one.
"""
from __future__ import annotations

import csv
import io
import json
import math

from gpumix.planner.errors import InputError
from gpumix.planner.export.groups import (Group, ScheduledGroup, groups_of, max_model_len, router_weights,
                                          safe_name, scheduled_groups)
from gpumix.planner.export.k8s import keda_scaled_object, k8s_files
from gpumix.planner.export.skypilot import skypilot_files
from gpumix.planner.export.vllm import vllm_files
from gpumix.planner.reading import quote

DAY_MINUTES = 24 * 60
WEEK_MINUTES = 7 * DAY_MINUTES


def schedule_files(plan: dict, formats, source: str, image: str, rocm_image: str, spot_label) -> dict[str, str]:
    """{relative path: text} for a plan with periods (module docstring)."""
    if plan.get("nodes") or plan.get("shared"):
        raise InputError(source, "periods", "a plan with periods and nodes or shared sets is not one gpumix makes")
    horizon = plan.get("horizon")
    if not isinstance(horizon, dict):
        raise InputError(source, "horizon", "missing or not a mapping (a plan with periods has one)")
    hours = horizon.get("period_hours")
    if not isinstance(hours, (int, float)) or isinstance(hours, bool) or not 0 < hours <= 8760:
        raise InputError(source, "horizon.period_hours", "must be a number of hours in (0, 8760]")
    timezone = safe_name(horizon.get("timezone", "UTC"), source, "horizon.timezone")
    sched = scheduled_groups(plan, source)
    for t, entry in enumerate(plan["periods"]):  # the crons count periods of period_hours each
        h = entry.get("hours")
        if not isinstance(h, (int, float)) or isinstance(h, bool) or abs(h - hours) > 1e-9 * max(1.0, hours):
            raise InputError(source, f"periods[{t}].hours", f"must be horizon.period_hours ({hours:g}), got {quote(h)}")
    peak = groups_of(plan, source)
    groups = [s.group for s in sched]
    max_len = max_model_len(groups)
    files = {"router-weights.json": json.dumps(router_weights(peak), indent=2) + "\n",
             "router-weights-periods.json": _period_weights(plan, source),
             "schedule.csv": schedule_csv(sched)}
    for fmt in formats:
        if fmt == "vllm":
            files.update(vllm_files({}, groups, max_len))
        elif fmt == "k8s":
            crons = cron_windows(len(plan["periods"]), float(hours), source)
            low = [Group(g.name, g.model, g.gpu, g.tp, s.low, g.spot, g.routes, g.quantization, g.kv_cache_dtype)
                   for s, g in zip(sched, groups)]
            files.update(k8s_files(low, image, rocm_image, spot_label))
            for s in sched:
                if s.low != s.high:
                    files[f"k8s/{s.group.name}-scaledobject.yaml"] = keda_scaled_object(s.group.name, s.counts,
                                                                                         crons, timezone)
        elif fmt == "skypilot":
            files.update(skypilot_files({}, groups, max_len, rocm_image, _policies(plan, sched)))
        else:
            raise InputError(source, "--format", f"unknown format {fmt!r}")
    return files


def schedule_csv(sched: list[ScheduledGroup]) -> str:
    """period,model,gpu,tp,replicas: every group in every period (0 where it does not run); groups of
    one model, GPU and TP at two precisions add up in one row (the plan and the k8s files split them)."""
    rows: dict[tuple, int] = {}
    for s in sched:
        g = s.group
        for t, n in enumerate(s.counts):
            rows[(t, g.model, g.gpu, g.tp)] = rows.get((t, g.model, g.gpu, g.tp), 0) + n
    buf = io.StringIO(newline="")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["period", "model", "gpu", "tp", "replicas"])
    for (t, model, gpu, tp), n in sorted(rows.items()):
        w.writerow([t, _cell(model), _cell(gpu), tp, n])
    return buf.getvalue()


def _cell(text: str) -> str:
    """A name as a CSV cell that no spreadsheet reads as a formula (a leading = + - @ gets a quote)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def cron_windows(periods: int, hours: float, source: str) -> list[tuple[str, str]]:
    """(start, end) cron expressions per period, in minutes from 00:00 (module docstring)."""
    total = periods * hours * 60
    if math.isclose(total, DAY_MINUTES):
        week = False
    elif math.isclose(total, WEEK_MINUTES):
        week = True
    else:
        raise InputError(source, "horizon", f"KEDA cron schedules repeat daily or weekly: a horizon of "
                                            f"{periods * hours:g} h has no cron form (export vllm or skypilot, "
                                            "or plan 24 or 168 hours)")
    out = []
    for t in range(periods):
        times = []
        for edge in (t, t + 1):
            minutes = edge * hours * 60
            if abs(minutes - round(minutes)) > 1e-6:
                raise InputError(source, f"periods[{edge % periods}]", f"starts {minutes:g} minutes into the "
                                 "horizon, not on a whole minute: cron cannot start it")
            m = round(minutes) % (WEEK_MINUTES if week else DAY_MINUTES)
            day, rest = divmod(m, DAY_MINUTES)
            times.append(f"{rest % 60} {rest // 60} * * {(day + 1) % 7 if week else '*'}")
        out.append((times[0], times[1]))
    return out


def _policies(plan: dict, sched: list[ScheduledGroup]) -> dict[str, dict]:
    """SkyServe replica_policy per changing group: min/max replicas and the planned req/s per replica
    in the period it runs the most replicas."""
    out = {}
    for s in sched:
        if s.low == s.high:
            continue
        t = max(range(len(s.counts)), key=lambda t: (s.counts[t], -t))
        entry = plan["periods"][t]
        rps = sum(r["rps"] for g in entry["replicas"] if isinstance(g, dict) for r in g.get("routes") or ()
                  if _same(g, s.group))
        out[s.group.name] = {"min_replicas": s.low, "max_replicas": s.high,
                             "target_qps_per_replica": round(max(rps / s.counts[t], 1e-3), 6)}
    return out


def _same(g: dict, group: Group) -> bool:
    return (g.get("model"), g.get("gpu"), g.get("tp"), g.get("quantization", "none"),
            g.get("kv_cache_dtype", "auto"), bool(g.get("spot"))) == \
        (group.model, group.gpu, group.tp, group.quantization, group.kv_cache_dtype, group.spot)


def _period_weights(plan: dict, source: str) -> str:
    periods = []
    for t, entry in enumerate(plan["periods"]):
        groups = groups_of({"replicas": entry["replicas"], "shared": True}, source)
        periods.append({"period": t, **{k: v for k, v in router_weights(groups).items() if k == "models"}})
    return json.dumps({"schema_version": 1, "note": "router-weights.json for each period (its `models`)",
                       "periods": periods}, indent=2) + "\n"
