"""Reference plans users compare against: the best plan that rents a single GPU type."""
from __future__ import annotations

from gpumix.planner.errors import GpumixError
from gpumix.planner.problem import Problem
from gpumix.solvers.result import Deadline
from gpumix.solvers.stage1.decompose import Solution, SolveParams, solve


class BaselineIncomplete(Exception):
    """The time limit ran out before every GPU type was tried: no honest 'best single type'."""


def best_single_gpu(problem: Problem, time_limit: float | None = None,
                    whole_buckets: bool = False) -> tuple[str, Solution] | None:
    """Cheapest plan using one GPU type for every model (any TP), or None if no type serves all.
    Raises BaselineIncomplete when the time limit ends before every type was tried."""
    best: tuple[str, Solution] | None = None
    gpus = sorted(problem.price)
    deadline = Deadline.start(time_limit)
    for i, g in enumerate(gpus):
        sub = problem.restrict(gpus={g})
        if sub.unserved():
            continue
        if deadline.remaining() <= 0.05:
            raise BaselineIncomplete(f"tried {i} of {len(gpus)} GPU types")
        budget = deadline.left(1 / (len(gpus) - i))  # the time left spread over the types still to try
        try:
            sol = solve(sub, SolveParams(time_limit=budget, whole_buckets=whole_buckets))
        except GpumixError:
            continue
        if best is None or sol.cost < best[1].cost - 1e-9:
            best = (g, sol)
    return best
