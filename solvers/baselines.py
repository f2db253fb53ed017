"""Reference plans users compare against: the best plan that rents a single GPU type."""
from __future__ import annotations

from planner.errors import GpumixError
from planner.problem import Problem
from solvers.stage1 import Solution, SolveParams, solve


def best_single_gpu(problem: Problem, time_limit: float | None = None,
                    whole_buckets: bool = False) -> tuple[str, Solution] | None:
    """Cheapest plan using one GPU type for every model (any TP), or None if no type serves all."""
    best: tuple[str, Solution] | None = None
    gpus = sorted(problem.price)
    for i, g in enumerate(gpus):
        sub = problem.restrict(gpus={g})
        if sub.unserved():
            continue
        budget = None if time_limit is None else time_limit / (len(gpus) - i)
        try:
            sol = solve(sub, SolveParams(time_limit=budget, whole_buckets=whole_buckets))
        except GpumixError:
            continue
        if best is None or sol.cost < best[1].cost - 1e-9:
            best = (g, sol)
    return best
