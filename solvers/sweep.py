"""Cost sweeps: plan one workload at several demand scales and/or TPOT SLOs (`gpumix sweep`).

Each point is a full `plan_workload` run with the same options and time limit; a point that is
infeasible or finds no plan in time is reported in its row, not raised. Bad input is raised once.
The best single-GPU-type cost is the plan's baseline; instance plans carry none, so for them each
GPU type that can serve every model alone is planned on its own instances (time limit shared).
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from gpumix.planner.errors import GpumixError, InputError
from gpumix.planner.reading import bounds_text, in_bounds
from gpumix.planner.workload import SLO, GpuOffer, Workload
from gpumix.solvers.pipeline import PlanOptions, PlanResult, plan_workload
from gpumix.solvers.result import Deadline


@dataclass(frozen=True)
class SweepPoint:
    scale: float = 1.0  # every model's rate_rps times this
    tpot_ms: float | None = None  # every model's TPOT SLO set to this; None: as in the workload

    def transform(self, w: Workload) -> Workload:
        """The workload at this point; a scaled rate or a TPOT outside the reader's bounds is bad
        input, as it would be in the workload itself."""
        for i, m in enumerate(w.models):
            if not in_bounds(m.rate_rps * self.scale, "rate_rps"):
                raise InputError("--scale", f"models[{i}].rate_rps", f"{m.rate_rps:g} x {self.scale:g} is outside "
                                 f"{bounds_text('rate_rps')}")
        if self.tpot_ms is not None and not in_bounds(self.tpot_ms, "slo_ms"):
            raise InputError("--tpot-ms", "", f"{self.tpot_ms:g} is outside {bounds_text('slo_ms')}")
        models = tuple(replace(m, rate_rps=m.rate_rps * self.scale,
                               slo=m.slo if self.tpot_ms is None else SLO(m.slo.ttft_ms, self.tpot_ms))
                       for m in w.models)
        return replace(w, models=models)


def _only(gpu: str, point: SweepPoint) -> Callable[[Workload], Workload]:
    """point.transform, then only `gpu` offered (apply_instances narrows the instances to it)."""
    def transform(w: Workload) -> Workload:
        w = point.transform(w)
        listed = [g for g in w.gpus or () if g.name == gpu]
        return replace(w, gpus=tuple(listed) or (GpuOffer(gpu, 1.0, None, None),))
    return transform


def best_single_instances(workload_path, profiles_path, options: PlanOptions, point: SweepPoint,
                          result: PlanResult) -> tuple[str, float] | None:
    """Cheapest instance plan on one GPU type, over the types that can serve every model alone."""
    types = [g for g in sorted(result.problem.price) if not result.problem.restrict(gpus={g}).unserved()]
    # what the point's own plan left of its time limit, spread over the types still to plan
    deadline = Deadline.start(None if options.time_limit is None else max(options.time_limit - result.wall_s, 0.1))
    best = None
    for i, g in enumerate(types):
        budget = deadline.left(1 / (len(types) - i), floor=0.1)
        try:
            r = plan_workload(workload_path, profiles_path, replace(options, time_limit=budget, baseline=False),
                              transform=_only(g, point))
        except GpumixError:
            continue
        if best is None or r.plan["cost_per_hour"] < best[1] - 1e-9:
            best = (g, r.plan["cost_per_hour"])
    return best


@dataclass(frozen=True)
class PointResult:
    point: SweepPoint
    status: str  # the plan's status, or "infeasible" / "no plan" / "error"
    cost: float | None = None
    lower_bound: float | None = None
    gpus: tuple[tuple[str, int], ...] = ()  # GPU mix: (type, GPUs used)
    best_single: tuple[str, float] | None = None  # (GPU type, $/h)
    error: str = ""
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return {"scale": self.point.scale, "tpot_ms": self.point.tpot_ms, "status": self.status,
                "cost_per_hour": self.cost, "lower_bound_per_hour": self.lower_bound,
                "gpus": dict(self.gpus),
                "best_single_gpu": None if self.best_single is None else
                {"gpu": self.best_single[0], "cost_per_hour": self.best_single[1]},
                "error": self.error or None}


def sweep_points(scales: list[float] | None, tpots: list[float] | None) -> list[SweepPoint]:
    """The grid: every scale with every TPOT (either list alone is a line)."""
    return [SweepPoint(s, t) for s, t in itertools.product(scales or [1.0], tpots or [None])]


def _label(e: GpumixError) -> str:
    return {3: "infeasible", 4: "no plan"}.get(getattr(e, "exit_code", 1), "error")


def plan_point(workload_path: Path | str | None, profiles_path: Path | str | None, options: PlanOptions,
               point: SweepPoint) -> PointResult:
    t0 = time.perf_counter()
    try:
        result = plan_workload(workload_path, profiles_path, options, transform=point.transform)
    except InputError:
        raise
    except GpumixError as e:
        return PointResult(point, _label(e), error=str(e), wall_s=time.perf_counter() - t0)
    plan = result.plan
    best = None
    base = (plan.get("baseline") or {}).get("best_single_gpu")
    if base:
        best = (base["gpu"], base["cost_per_hour"])
    elif plan.get("nodes") is not None and options.baseline and len(result.problem.price) > 1:
        best = best_single_instances(workload_path, profiles_path, options, point, result)
    return PointResult(point, plan["status"], plan["cost_per_hour"], plan["lower_bound_per_hour"],
                       tuple((g["name"], g["used"]) for g in plan["gpus"]), best,
                       wall_s=time.perf_counter() - t0)


def run_sweep(workload_path: Path | str | None, profiles_path: Path | str | None, options: PlanOptions,
              points: list[SweepPoint], on_point: Callable[[PointResult], None] | None = None) -> list[PointResult]:
    out = []
    for p in points:
        out.append(plan_point(workload_path, profiles_path, options, p))
        if on_point is not None:
            on_point(out[-1])
    return out
