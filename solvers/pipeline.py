"""Workload in, checked plan out: the path `gpumix plan` walks (no printing, no files)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gpumix.data import EXAMPLE_WORKLOAD
from gpumix.planner.capacity import build_problem, require_servable
from gpumix.planner.catalog import load_catalog
from gpumix.planner.efficiency import with_efficiency
from gpumix.planner.checker import check_plan
from gpumix.planner.errors import GpumixError, InputError
from gpumix.planner.instances import apply_instances
from gpumix.planner.plan import make_plan
from gpumix.planner.problem import Problem
from gpumix.planner.profiles import load_profiles
from gpumix.planner.workload import Workload, load_workload
from gpumix.solvers.result import Deadline
from gpumix.solvers.stage1.baseline import BaselineIncomplete, best_single_gpu
from gpumix.solvers.stage1.decompose import Progress, Solution, SolveParams, solve

BASELINE_MAX_MODELS = 100  # one full solve per GPU type: skipped above this many models


class CheckFailed(GpumixError):
    """A plan the independent checker rejects is never written. Exit code 1."""

    exit_code = 1


@dataclass
class PlanResult:
    plan: dict
    problem: Problem
    solution: Solution
    baseline: tuple[str, Solution] | None
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0


@dataclass(frozen=True)
class PlanOptions:
    time_limit: float | None = None
    mip_gap: float = 1e-4
    fill_estimates: bool = False
    whole_buckets: bool = False
    baseline: bool = True
    progress: Progress | None = None
    # instance plans and re-planning (docs/placement.md)
    current: Path | str | None = None  # the running plan, to re-plan with little churn
    churn_cost: float = 1.0  # $/h-equivalent per replica started or moved
    spare_nodes: int = 0  # the plan survives losing any N nodes
    allow_partial: bool = False  # serve the most it can when demand exceeds availability
    spot_share: float = 0.0  # at most this share of each model's traffic on spot instances
    workers: int = 8  # CP-SAT workers (interleaved in one thread: deterministic)
    seed: int = 0
    catalog: Path | str | None = None  # a SkyPilot catalog CSV: instance shapes and prices (planner/skypilot.py)
    share_gpus: bool = False  # let several models share GPU sets (docs/sharing.md, solvers/sharing/)
    efficiency: Path | str | None = None  # a user efficiency file over the bundled factors (planner/efficiency.py)
    start_cost: float | None = None  # $ per replica started, every config (--start-cost; docs/schedule.md)

    @property
    def extended(self) -> bool:
        return bool(self.current or self.spare_nodes or self.allow_partial or self.spot_share)


def load_problem(workload_path: Path | str | None, profiles_path: Path | str | None,
                 fill_estimates: bool = False, catalog_path: Path | str | None = None,
                 transform: Callable[[Workload], Workload] | None = None,
                 efficiency_path: Path | str | None = None):
    """`transform` edits the validated workload before sizing (solvers/sweep.py scales demand, SLOs);
    `efficiency_path` lays a user efficiency file over the bundled factors (and adds its specs)."""
    catalog = with_efficiency(load_catalog(), efficiency_path)
    profiles = load_profiles(profiles_path) if profiles_path else None
    need_shapes = profiles is None or fill_estimates
    sky = None
    if catalog_path is not None:
        from gpumix.planner.skypilot import load_skypilot_csv
        sky = load_skypilot_csv(catalog_path, catalog, need_shapes)
    workload = load_workload(workload_path or EXAMPLE_WORKLOAD, catalog, need_shapes=need_shapes,
                             instance_catalog=sky.instances if sky else None)
    if transform is not None:
        workload = transform(workload)
    workload = apply_instances(workload, catalog)  # no-op without `instances`
    problem, report = build_problem(workload, catalog, profiles, fill_estimates)
    if sky is not None:
        report.notes[:0] = sky.notes
    return workload, problem, report


@dataclass(frozen=True)
class Draft:
    """What a planning path hands back to `finish`: the plan document without `inputs`, the solution
    behind it, and what the checker needs beside it."""

    plan: dict
    solution: object  # Solution, PlacementSolution or ShareSolution
    problem: Problem  # the problem the plan answers (the full one: the checker checks every model)
    baseline: tuple[str, Solution] | None = None
    notes: tuple[str, ...] = ()  # added after the problem report's notes
    sharing: object | None = None  # planner.sharing.SharingModel for --share-gpus plans
    schedule: object | None = None  # planner.schedule.Schedule for plans with periods


# The paths a plan takes, chosen in plan_workload
DEDICATED = "dedicated"  # stage 1 on loose GPUs (solvers/stage1)
NODES = "nodes"  # instance shapes, re-planning, spares, spot, partial (solvers/stage2/flow.py)
SHARED = "shared"  # --share-gpus (solvers/sharing/flow.py)
SCHEDULE = "schedule"  # a workload with periods (solvers/schedule/flow.py)

TIME_MARGIN = 0.95  # of what loading left, for the solve: the rest for checking and writing
BASELINE_MIN_SHARE = 0.1  # the baseline runs only with this share of the time limit left


def plan_workload(workload_path: Path | str | None = None, profiles_path: Path | str | None = None,
                  options: PlanOptions = PlanOptions(),
                  transform: Callable[[Workload], Workload] | None = None) -> PlanResult:
    """load -> capacity -> solve (one of three paths) -> check -> plan document."""
    t0 = time.perf_counter()
    workload, problem, report = load_problem(workload_path, profiles_path, options.fill_estimates,
                                             options.catalog, transform, options.efficiency)
    require_servable(problem, report)
    deadline = Deadline(None if options.time_limit is None else t0 + options.time_limit)  # the whole command
    if workload.periods is not None:
        from gpumix.solvers.schedule.flow import plan_schedule, refusal
        if transform is not None:
            raise InputError(workload.path, "rate_rps", "plans one state only here (gpumix sweep): this workload "
                                                        "has periods; plan it with `gpumix plan`")
        refused = refusal(workload, options)
        if refused is not None:
            raise refused
        plan, schedule, solution = plan_schedule(workload, problem, options, deadline)
        draft = Draft(plan, solution, problem, schedule=schedule)
        return finish(draft, SCHEDULE, workload, report, workload_path, profiles_path, options, t0)
    if options.start_cost is not None:
        raise InputError(str(workload_path or EXAMPLE_WORKLOAD), "--start-cost",
                         "applies to workloads with periods (docs/schedule.md)")
    route = SHARED if options.share_gpus else NODES if workload.instances or options.extended else DEDICATED
    if route == SHARED:
        clash = ("--whole-buckets" if options.whole_buckets
                 else "--current/--spare-nodes/--allow-partial/--spot-share" if options.extended else None)
        if clash:
            raise InputError(str(workload_path or EXAMPLE_WORKLOAD), "--share-gpus",
                             f"cannot be combined with {clash} yet")
        several = next((i for i, m in enumerate(workload.models) if len(m.precisions) > 1), None)
        if several is not None:
            raise InputError(workload.path, f"models[{several}].quantization",
                             "--share-gpus plans one precision per model: give one quantization and one "
                             "kv_cache_dtype, or plan without --share-gpus to let the solver choose")
        from gpumix.solvers.sharing.flow import plan_shared
        draft = plan_shared(workload, problem, profiles_path, options, deadline)
    elif route == NODES:
        from gpumix.solvers.stage2.flow import plan_extended
        draft = plan_extended(workload, problem, options, deadline)
    else:
        draft = _plan_dedicated(problem, options, deadline)
    return finish(draft, route, workload, report, workload_path, profiles_path, options, t0)


def finish(draft: Draft, route: str, workload: Workload, report, workload_path, profiles_path,
           options: PlanOptions, t0: float) -> PlanResult:
    """The one exit: the plan's `inputs`, the independent checker, the result."""
    inputs = {"workload": str(workload_path) if workload_path else "bundled example",
              "profiles": str(profiles_path) if profiles_path else None,
              "fill_estimates": options.fill_estimates}
    if options.efficiency is not None:
        inputs["efficiency"] = str(options.efficiency)
    if route == SHARED:
        inputs["share_gpus"] = True
    if route == NODES:
        if options.current:
            inputs["current"] = str(options.current)
        if options.catalog is not None:
            inputs["catalog"] = str(options.catalog)
    if route == SCHEDULE and options.start_cost is not None:
        inputs["start_cost"] = options.start_cost
    plan = draft.plan
    plan["inputs"] = inputs
    if draft.schedule is not None:
        from gpumix.planner.checker import check_periods
        findings = check_periods(plan, draft.schedule)
    else:
        findings = check_plan(plan, draft.problem, workload.instances or None, sharing=draft.sharing)
    if findings:
        raise CheckFailed("internal error: the plan failed the independent checker: " + str(findings[0]))
    return PlanResult(plan, draft.problem, draft.solution, draft.baseline, list(report.notes) + list(draft.notes),
                      time.perf_counter() - t0)


def _plan_dedicated(problem: Problem, options: PlanOptions, deadline: Deadline) -> Draft:
    """Stage 1 on loose GPUs, and the best single GPU type beside it."""
    # the limit covers the whole command: what loading took, and a margin for checking and writing
    limit = deadline.left(TIME_MARGIN, floor=0.1)
    solution = solve(problem, SolveParams(limit, options.mip_gap, options.whole_buckets, options.progress))
    baseline, notes = None, ()
    want_baseline = options.baseline and len(problem.price) > 1 and len(problem.models) <= BASELINE_MAX_MODELS
    if want_baseline:
        try:
            if deadline.limited and deadline.remaining() < BASELINE_MIN_SHARE * options.time_limit:
                raise BaselineIncomplete("no time left")
            baseline = best_single_gpu(problem, deadline.left(), options.whole_buckets)
        except BaselineIncomplete:
            want_baseline = False
            notes = ("best single GPU type not computed: the time limit was used up "
                     "(raise --time-limit to see it)",)
    base_doc = None  # not computed
    if want_baseline:
        base_doc = {"best_single_gpu": None}  # computed: no single type serves every model
        if baseline is not None:
            g, b = baseline
            base_doc["best_single_gpu"] = {
                "gpu": g, "cost_per_hour": round(b.cost, 9), "status": b.status.value,
                "savings": round(1 - solution.cost / b.cost, 9) if b.cost > 0 else 0.0}
    plan = make_plan(
        problem, solution.status.value, solution.cost, solution.bound, solution.replicas, solution.routes,
        baseline=base_doc,
        solver={"stage1": "PuLP + HiGHS", "method": solution.method, "mip_gap": options.mip_gap,
                "whole_buckets": options.whole_buckets},
    )
    return Draft(plan, solution, problem, baseline, notes)
