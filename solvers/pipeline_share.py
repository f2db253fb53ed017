"""`gpumix plan --share-gpus`: the plan_workload path when models may share GPU sets."""
from __future__ import annotations

import time
from pathlib import Path

from planner.catalog import load_catalog
from planner.checker import check_plan
from planner.errors import InputError
from planner.plan import make_plan
from planner.sharing import build_sharing, shared_entries
from solvers.share import ShareParams, solve_shared


def plan_shared(workload, problem, report, workload_path: Path | str | None, profiles_path, options, t0: float):
    from solvers.pipeline import EXAMPLE_WORKLOAD, CheckFailed, PlanResult

    clash = ("instances" if workload.instances else "--whole-buckets" if options.whole_buckets
             else "--current/--spare-nodes/--allow-partial/--spot-share" if options.extended else None)
    if clash:
        raise InputError(str(workload_path or EXAMPLE_WORKLOAD), "--share-gpus",
                         f"cannot be combined with {clash} yet (shared sets are planned as loose GPUs)")
    sharing = build_sharing(workload, load_catalog(), problem)
    sol = solve_shared(problem, sharing, ShareParams(options.time_limit, options.mip_gap, options.workers,
                                                     options.seed, options.progress))
    notes = list(report.notes) + [f"{m} is not shared: {why}" for m, why in sol.unshareable.items()]
    plan = make_plan(
        problem, sol.status, sol.cost, sol.bound, sol.replicas, sol.routes,
        inputs={"workload": str(workload_path) if workload_path else "bundled example",
                "profiles": str(profiles_path) if profiles_path else None,
                "fill_estimates": options.fill_estimates, "share_gpus": True},
        solver={"stage1": "PuLP + HiGHS, CP-SAT", "method": sol.method, "mip_gap": options.mip_gap,
                "whole_buckets": False,
                "dedicated_only_cost_per_hour": None if sol.dedicated_only_cost is None
                else round(sol.dedicated_only_cost, 9)},
        shared=shared_entries(problem, sharing, list(sol.shared)))
    violations = check_plan(plan, problem, sharing=sharing)
    if violations:
        raise CheckFailed("internal error: the plan failed the independent checker: " + violations[0])
    return PlanResult(plan, problem, sol, None, notes, time.perf_counter() - t0)
