"""Stage 1, sizing and routing: per-model decomposition first, the joint MILP only when needed.

Without availability the problem separates by model (C1, C2 touch one model; only C3 couples them),
so the per-model MILPs' optima add up to the joint optimum. Each model alone under C3 is a
relaxation of the joint problem, so the sum of the per-model lower bounds is a valid lower bound
on every plan (stronger than the LP relaxation, which ignores integrality of replicas). When the
union of per-model plans breaks availability, the joint MILP is solved and its bound is the larger
of its own and the decomposition's.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

from gpumix.planner.errors import InfeasibleError, NoSolutionError
from gpumix.planner.problem import BucketKey, Config, Problem
from gpumix.solvers.stage1 import milp
from gpumix.solvers.stage1.coupled import solve_coupled
from gpumix.solvers.stage1.presolve import drop_dominated

Progress = Callable[[str], None]


@dataclass(frozen=True)
class SolveParams:
    time_limit: float | None = None  # seconds for the whole solve
    mip_gap: float = 1e-4  # relative gap at which a plan counts as optimal
    whole_buckets: bool = False  # Melange-style: each bucket to one config
    progress: Progress | None = None


@dataclass(frozen=True)
class Solution:
    status: str  # "optimal" | "feasible"
    cost: float
    bound: float  # valid lower bound on every plan's cost
    replicas: dict[Config, int]
    routes: dict[tuple[Config, BucketKey], float]
    wall_s: float
    method: str
    stats: dict = field(default_factory=dict)
    model_bounds: dict = field(default_factory=dict)  # model -> its own lower bound (alone, full availability)

    @property
    def gap(self) -> float:
        return 0.0 if self.cost <= 0 else max(self.cost - self.bound, 0.0) / self.cost


def gpus_used(replicas: dict[Config, int]) -> dict[str, int]:
    used: dict[str, int] = {}
    for c, k in replicas.items():
        used[c.gpu] = used.get(c.gpu, 0) + c.tp * k
    return used


def over_availability(problem: Problem, replicas: dict[Config, int]) -> dict[str, tuple[int, int]]:
    """GPU types whose availability `replicas` exceed: gpu -> (used, available)."""
    used = gpus_used(replicas)
    return {g: (u, problem.available[g]) for g, u in sorted(used.items())
            if problem.available.get(g) is not None and u > problem.available[g]}


def solve(problem: Problem, params: SolveParams = SolveParams()) -> Solution:
    t0 = time.perf_counter()
    problem, dropped = drop_dominated(problem)
    deadline = None if params.time_limit is None else t0 + params.time_limit
    say = params.progress or (lambda _msg: None)

    def left(share: float = 1.0) -> float | None:
        return None if deadline is None else max(deadline - time.perf_counter(), 0.0) * share

    # Phase 1: one MILP per model, each under the full availability (a relaxation). With finite
    # availability the models may still couple, so this phase gets at most 40% of a time limit;
    # past that, the joint MILP takes over (never worse than the monolithic model with 60%).
    coupled = any(a is not None for a in problem.available.values())
    phase_end = None if deadline is None else t0 + (0.4 if coupled else 1.0) * params.time_limit
    per_model: dict[str, milp.MilpResult] = {}
    for i, m in enumerate(problem.models):
        if coupled and phase_end is not None and time.perf_counter() > phase_end:
            return _joint_fallback(problem, per_model, params, t0, deadline, say)
        sub = problem.restrict(models={m})
        # about a third of the limit for this phase, spread over the models still to solve
        budget = None if deadline is None else max(min(
            left() * 0.25, max((phase_end - time.perf_counter()) / (len(problem.models) - i), 0.5)), 0.02)
        res = milp.run(sub, budget, mip_gap=params.mip_gap * 0.1, whole_buckets=params.whole_buckets)
        if res.status == "infeasible":
            raise InfeasibleError(_explain_single(problem, m, params))
        if res.status == "no_solution":
            raise NoSolutionError(f"no plan for model {m!r} within the time limit")
        per_model[m] = res
        if (i + 1) % 50 == 0 or i + 1 == len(problem.models):
            say(f"per-model MILPs {i + 1}/{len(problem.models)}: "
                f"bound ${sum(r.bound for r in per_model.values()):,.2f}/h")

    decomposed_bound = sum(r.bound for r in per_model.values())
    replicas = {c: k for r in per_model.values() for c, k in r.replicas.items()}
    routes = {key: v for r in per_model.values() for key, v in r.routes.items()}
    all_optimal = all(r.status == "optimal" for r in per_model.values())
    stats = {"models": len(problem.models), "configs": len(problem.configs), "dominated": dropped,
             "per_model_s": round(time.perf_counter() - t0, 3)}
    over = over_availability(problem, replicas)
    if not over:
        cost = _cost(problem, replicas)
        return _finish(problem, replicas, routes, min(decomposed_bound, cost), all_optimal, params,
                       t0, "decomposed", stats, per_model)

    # Phase 2: availability couples the models (solvers/coupled.py).
    say(f"availability binds on {', '.join(over)}: Lagrangian bound, CP-SAT master, joint MILP")
    res = solve_coupled(problem, per_model, deadline, params.mip_gap, params.whole_buckets, say)
    if res is None:
        if deadline is not None and time.perf_counter() >= deadline:
            raise NoSolutionError("no plan within the time limit (availability binds on "
                                  f"{', '.join(over)}); raise --time-limit")
        raise InfeasibleError(_explain_joint(problem, over))
    stats.update(res.stats)
    bound = min(max(res.bound, decomposed_bound), res.cost)
    return _finish(problem, res.replicas, res.routes, bound, res.optimal, params, t0, "coupled", stats, per_model)


def _joint_fallback(problem, per_model, params, t0, deadline, say) -> Solution:
    """The joint MILP from scratch; the models solved alone so far still add up to a bound."""
    say(f"per-model phase out of time after {len(per_model)} models: joint MILP")
    left = max(deadline - time.perf_counter(), 0.05)
    joint = milp.run(problem, left, mip_gap=params.mip_gap * 0.1, whole_buckets=params.whole_buckets)
    if joint.status == "infeasible":
        raise InfeasibleError(_explain_joint(problem, {}))
    if joint.status == "no_solution":
        raise NoSolutionError("no plan within the time limit; raise --time-limit")
    bound = min(max(joint.bound, sum(r.bound for r in per_model.values())), joint.objective)
    stats = {"models": len(problem.models), "configs": len(problem.configs), "joint_s": round(joint.wall_s, 3)}
    return _finish(problem, joint.replicas, joint.routes, bound, joint.status == "optimal", params, t0,
                   "joint", stats)


def _cost(problem: Problem, replicas: dict[Config, int]) -> float:
    return sum(problem.config_cost(c) * k for c, k in replicas.items())


def _finish(problem, replicas, routes, bound, solver_optimal, params, t0, method, stats, per_model=None) -> Solution:
    cost = _cost(problem, replicas)
    gap = 0.0 if cost <= 0 else (cost - bound) / cost
    status = "optimal" if solver_optimal and gap <= params.mip_gap + 1e-12 else "feasible"
    wall = time.perf_counter() - t0
    (params.progress or (lambda _m: None))(
        f"{status}: ${cost:,.2f}/h, bound ${bound:,.2f}/h, gap {gap:.4%}, {wall:.2f}s")
    return Solution(status, cost, bound, dict(sorted(replicas.items())), routes, wall, method, stats,
                    {m: r.bound for m, r in (per_model or {}).items()})


def _explain_single(problem: Problem, model: str, params: SolveParams) -> str:
    """Why one model cannot be served within availability: what it would need without limits."""
    sub = problem.restrict(models={model})
    free = milp.run(sub, 10.0, whole_buckets=params.whole_buckets,
                    available={g: None for g in sub.available})
    if free.status not in ("optimal", "feasible"):
        return f"model {model!r} cannot be served by any allowed configuration"
    need = ", ".join(f"{u} {g} (available {a})" for g, (u, a) in over_availability(sub, free.replicas).items())
    return (f"model {model!r} needs more GPUs than available: its cheapest plan without limits uses "
            f"{need or 'GPU types whose availability is too small'}")


def _explain_joint(problem: Problem, over: dict[str, tuple[int, int]]) -> str:
    if not over:
        return "the models together need more GPUs than available; raise `available` or lower demand"
    detail = ", ".join(f"{g}: {u} wanted, {a} available" for g, (u, a) in over.items())
    return ("the models together need more GPUs than available "
            f"(each alone fits; cheapest combined choice: {detail}); raise `available` or lower demand")
