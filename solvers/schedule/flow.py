"""The pipeline's periods path: the schedule, its solve, the plan document (docs/schedule.md).

What composes with periods and what does not (each refusal exits 2 with its reason):
  --share-gpus            refused: a shared set's members and memory would change per period, and
                          which models may share then depends on the period; not modelled yet
  instances               refused: per-period placement onto nodes (and nodes kept over a trough)
                          is a different model from loose GPUs; not modelled yet
  --current, --spare-nodes, --allow-partial, --spot-share, --whole-buckets   refused likewise
"""
from __future__ import annotations

import math

from gpumix.planner.catalog import load_catalog
from gpumix.planner.efficiency import with_efficiency
from gpumix.planner.errors import InputError
from gpumix.planner.plan import make_plan
from gpumix.planner.problem import Problem
from gpumix.planner.schedule import Schedule, build_schedule, starts_of
from gpumix.planner.workload import Workload
from gpumix.solvers.result import Deadline
from gpumix.solvers.schedule.decompose import ScheduleSolution, solve

TIME_MARGIN = 0.95  # of what loading left, for the solve


def refusal(workload: Workload, options) -> InputError | None:
    """Why a workload with periods cannot be planned with these options, or None."""
    path = workload.path
    if options.share_gpus:
        return InputError(path, "--share-gpus", "cannot be combined with periods yet: which models may share a "
                                                "GPU set changes with their rates (docs/schedule.md)")
    if workload.instances:
        return InputError(path, "instances", "cannot be combined with periods yet: plan loose GPUs per period "
                                             "(docs/schedule.md)")
    for flag, on in (("--current", options.current), ("--spare-nodes", options.spare_nodes),
                     ("--allow-partial", options.allow_partial), ("--spot-share", options.spot_share),
                     ("--whole-buckets", options.whole_buckets)):
        if on:
            return InputError(path, flag, "cannot be combined with periods yet (docs/schedule.md)")
    return None


def plan_schedule(workload: Workload, problem: Problem, options, deadline: Deadline):
    """Schedule, solve, document: (plan, schedule, solution)."""
    catalog = with_efficiency(load_catalog(), options.efficiency)
    schedule = build_schedule(workload, problem, catalog, options.start_cost)
    sol = solve(schedule, deadline.sub(TIME_MARGIN, floor=0.1), options.mip_gap, options.progress,
                static_baseline=options.baseline)
    return schedule_plan(schedule, sol, options), schedule, sol


def peak_period(sol: ScheduleSolution) -> int:
    """The period whose fleet costs most per hour (the first such)."""
    return max(range(len(sol.period_cost)), key=lambda t: (sol.period_cost[t], -t))


def _floor(x: float) -> float:
    return math.floor(x * 1e9) / 1e9


def schedule_plan(schedule: Schedule, sol: ScheduleSolution, options) -> dict:
    """The plan document: today's keys for the peak period, and periods, totals and baselines."""
    p = peak_period(sol)
    starts = starts_of(schedule, sol.counts)
    periods = []
    for t in range(schedule.periods):
        doc = make_plan(schedule.period(t), sol.status.value, sol.period_cost[t], sol.period_bound[t],
                        sol.counts[t], sol.routes[t])
        periods.append({
            "index": t,
            "hours": schedule.hours[t],
            "cost_per_hour": doc["cost_per_hour"],
            "lower_bound_per_hour": doc["lower_bound_per_hour"],
            "starts": sum(starts[t].values()),
            "start_cost": round(sol.start_cost[t], 9),
            "gpus": {g["name"]: g["used"] for g in doc["gpus"]},
            "replicas": doc["replicas"],
        })
    baseline = {"per_period": {"total_cost": round(sol.per_period_total, 9)},
                "peak_static": None if sol.peak_static is None else {
                    "total_cost": round(sol.peak_static, 9),
                    "cost_per_hour": round(sol.peak_static / schedule.total_hours, 9),
                    "savings": round(1 - sol.total_cost / sol.peak_static, 9) if sol.peak_static > 0 else 0.0}}
    if not options.baseline:  # --no-baseline: not computed (null would say no static plan fits)
        del baseline["peak_static"]
    plan = make_plan(schedule.period(p), sol.status.value, sol.period_cost[p], sol.period_bound[p],
                     sol.counts[p], sol.routes[p], baseline=baseline,
                     solver={"schedule": "PuLP + HiGHS", "method": sol.method, "mip_gap": options.mip_gap})
    total, bound = round(sol.total_cost, 9), min(_floor(sol.bound), round(sol.total_cost, 9))
    plan["gap"] = 0.0 if total <= 0 else max(total - bound, 0.0) / total
    plan["total_cost"] = total
    plan["lower_bound_total"] = bound
    plan["horizon"] = {"periods": schedule.periods, "period_hours": schedule.hours[0],
                       "hours": schedule.total_hours, "cyclic": schedule.cyclic, "timezone": schedule.timezone,
                       "peak_period": p, "start_cost": schedule.start_cost_source}
    plan["periods"] = periods
    return plan
