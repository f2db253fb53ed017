"""Stage 1, sizing and routing: per-model decomposition first, the joint MILP only when needed.

Without availability the problem separates by model (C1, C2 touch one model; only C3 couples them),
so the per-model MILPs' optima add up to the joint optimum. Each model alone under C3 is a
relaxation of the joint problem, so the sum of the per-model lower bounds is a valid lower bound
on every plan (stronger than the LP relaxation, which ignores integrality of replicas). When the
union of per-model plans breaks availability, the joint MILP is solved and its bound is the larger
of its own and the decomposition's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from gpumix.planner.errors import InfeasibleError, NoSolutionError
from gpumix.planner.problem import BucketKey, Config, Problem
from gpumix.solvers.stage1 import milp
from gpumix.solvers.stage1.coupled import solve_coupled
from gpumix.solvers.result import INNER_GAP, Deadline, Status, certify, gap
from gpumix.solvers.stage1.presolve import drop_dominated

Progress = Callable[[str], None]

# Time shares of a limit (the rest goes to the coupled phase or the joint MILP)
PER_MODEL_SHARE = 0.4  # the per-model phase, when availability may couple the models
PER_MODEL_STEP = 0.25  # at most this share of what is left for one model's MILP
EXPLAIN_S = 10.0  # the unconstrained re-solve that explains an infeasible model, at most


@dataclass(frozen=True)
class SolveParams:
    time_limit: float | None = None  # seconds for the whole solve
    mip_gap: float = 1e-4  # relative gap at which a plan counts as optimal
    whole_buckets: bool = False  # Melange-style: each bucket to one config
    progress: Progress | None = None
    workers: int = 2  # CP-SAT workers of the coupled phase's master (interleaved: deterministic)
    seed: int = 0


@dataclass(frozen=True)
class Solution:
    status: Status  # OPTIMAL or FEASIBLE
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
        return gap(self.cost, self.bound)


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
    deadline = Deadline.start(params.time_limit)
    # Phase 1: one MILP per model, each under the full availability (a relaxation). With finite
    # availability the models may still couple, so this phase gets at most PER_MODEL_SHARE of a
    # time limit; past that, the joint MILP takes over (never worse than the monolithic model).
    coupled = any(a is not None for a in problem.available.values())
    phase = deadline.sub(PER_MODEL_SHARE if coupled else 1.0)
    problem, dropped = drop_dominated(problem)
    say = params.progress or (lambda _msg: None)
    per_model: dict[str, milp.MilpResult] = {}
    for i, m in enumerate(problem.models):
        if coupled and phase.expired():
            return _joint_fallback(problem, per_model, params, t0, deadline, say)
        sub = problem.restrict(models={m})
        # this phase's time spread over the models still to solve
        budget = deadline.left(PER_MODEL_STEP, cap=phase.left(1 / (len(problem.models) - i), floor=0.5),
                               floor=0.02)
        res = milp.run(sub, budget, mip_gap=params.mip_gap * INNER_GAP, whole_buckets=params.whole_buckets)
        if res.status == Status.INFEASIBLE:
            raise InfeasibleError(_explain_single(problem, m, params, deadline))
        if res.status == Status.NO_SOLUTION:
            raise NoSolutionError(f"no plan for model {m!r} within the time limit")
        per_model[m] = res
        if (i + 1) % 50 == 0 or i + 1 == len(problem.models):
            say(f"per-model MILPs {i + 1}/{len(problem.models)}: "
                f"bound ${sum(r.bound for r in per_model.values()):,.2f}/h")

    decomposed_bound = sum(r.bound for r in per_model.values())
    replicas = {c: k for r in per_model.values() for c, k in r.replicas.items()}
    routes = {key: v for r in per_model.values() for key, v in r.routes.items()}
    all_optimal = all(r.status == Status.OPTIMAL for r in per_model.values())
    stats = {"models": len(problem.models), "configs": len(problem.configs), "dominated": dropped,
             "per_model_s": round(time.perf_counter() - t0, 3)}
    over = over_availability(problem, replicas)
    if not over:
        cost = _cost(problem, replicas)
        return _finish(problem, replicas, routes, min(decomposed_bound, cost), all_optimal, params,
                       t0, "decomposed", stats, per_model)

    # Phase 2: availability couples the models (solvers/stage1/coupled.py).
    say(f"availability binds on {', '.join(over)}: Lagrangian bound, CP-SAT master, joint MILP")
    res = solve_coupled(problem, per_model, deadline, params.mip_gap, params.whole_buckets, say,
                        workers=params.workers, seed=params.seed)
    if res is None:
        if deadline.expired():
            raise NoSolutionError("no plan within the time limit (availability binds on "
                                  f"{', '.join(over)}); raise --time-limit")
        raise InfeasibleError(_explain_joint(problem, over))
    stats.update(res.stats)
    bound = min(max(res.bound, decomposed_bound), res.cost)
    return _finish(problem, res.replicas, res.routes, bound, res.optimal, params, t0, "coupled", stats, per_model)


def _joint_fallback(problem, per_model, params, t0, deadline, say) -> Solution:
    """The joint MILP from scratch; the models solved alone so far still add up to a bound."""
    say(f"per-model phase out of time after {len(per_model)} models: joint MILP")
    joint = milp.run(problem, deadline.left(floor=0.05), mip_gap=params.mip_gap * INNER_GAP,
                     whole_buckets=params.whole_buckets)
    if joint.status == Status.INFEASIBLE:
        raise InfeasibleError(_explain_joint(problem, {}))
    if joint.status == Status.NO_SOLUTION:
        raise NoSolutionError("no plan within the time limit; raise --time-limit")
    bound = min(max(joint.bound, sum(r.bound for r in per_model.values())), joint.objective)
    stats = {"models": len(problem.models), "configs": len(problem.configs), "joint_s": round(joint.wall_s, 3)}
    return _finish(problem, joint.replicas, joint.routes, bound, joint.status == Status.OPTIMAL, params, t0,
                   "joint", stats)


def _cost(problem: Problem, replicas: dict[Config, int]) -> float:
    return sum(problem.config_cost(c) * k for c, k in replicas.items())


def _finish(problem, replicas, routes, bound, solver_optimal, params, t0, method, stats, per_model=None) -> Solution:
    cost = _cost(problem, replicas)
    cert = certify(cost, bound, proven=solver_optimal, mip_gap=params.mip_gap)
    wall = time.perf_counter() - t0
    (params.progress or (lambda _m: None))(
        f"{cert.status}: ${cost:,.2f}/h, bound ${bound:,.2f}/h, gap {cert.gap:.4%}, {wall:.2f}s")
    return Solution(cert.status, cost, bound, dict(sorted(replicas.items())), routes, wall, method, stats,
                    {m: r.bound for m, r in (per_model or {}).items()})


def _explain_single(problem: Problem, model: str, params: SolveParams, deadline: Deadline) -> str:
    """Why one model cannot be served within availability: what it would need without limits."""
    sub = problem.restrict(models={model})
    free = milp.run(sub, deadline.left(cap=EXPLAIN_S, floor=0.05), whole_buckets=params.whole_buckets,
                    available={g: None for g in sub.available})
    if not free.status.has_plan:
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
