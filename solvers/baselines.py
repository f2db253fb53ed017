"""Reference plans users compare against: the best plan that rents a single GPU type."""
from __future__ import annotations

import time

from planner.errors import GpumixError
from planner.problem import Problem
from solvers.stage1 import Solution, SolveParams, solve


class BaselineIncomplete(Exception):
    """The time limit ran out before every GPU type was tried: no honest 'best single type'."""


def best_single_gpu(problem: Problem, time_limit: float | None = None,
                    whole_buckets: bool = False) -> tuple[str, Solution] | None:
    """Cheapest plan using one GPU type for every model (any TP), or None if no type serves all.
    Raises BaselineIncomplete when the time limit ends before every type was tried."""
    best: tuple[str, Solution] | None = None
    gpus = sorted(problem.price)
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    for i, g in enumerate(gpus):
        sub = problem.restrict(gpus={g})
        if sub.unserved():
            continue
        left = None if deadline is None else deadline - time.perf_counter()
        if left is not None and left <= 0.05:
            raise BaselineIncomplete(f"tried {i} of {len(gpus)} GPU types")
        budget = None if left is None else left / (len(gpus) - i)
        try:
            sol = solve(sub, SolveParams(time_limit=budget, whole_buckets=whole_buckets))
        except GpumixError:
            continue
        if best is None or sol.cost < best[1].cost - 1e-9:
            best = (g, sol)
    return best


def monolithic(problem: Problem, time_limit: float, solver: str = "highs", log_path: str | None = None):
    """The obvious formulation as one MILP (C1-C3, no decomposition, no strengthening), solved by
    HiGHS or CBC through PuLP: the baseline of bench/solver.py. Returns (status, cost, bound)."""
    import math

    import pulp

    from solvers import milp

    model = milp.build(problem, strengthen=False)
    if solver == "highs":
        status, obj, bound, _ = milp.solve(model, time_limit, mip_gap=1e-4)
        return status, obj, bound
    cmd = pulp.PULP_CBC_CMD(msg=True, timeLimit=time_limit, gapRel=1e-4, logPath=log_path, threads=1)
    model.prob.solve(cmd)
    obj = pulp.value(model.prob.objective) if model.prob.sol_status in (1, 2) else None
    bound = _cbc_bound(log_path) if log_path else None
    if model.prob.status == pulp.LpStatusInfeasible:
        return "infeasible", None, math.inf
    # PuLP reports "Optimal" for a CBC run stopped by its time limit: trust the log instead
    stopped = _cbc_stopped(log_path) if log_path else True
    status = "optimal" if obj is not None and not stopped else ("feasible" if obj is not None else "no_solution")
    return status, obj, bound if bound is not None else 0.0


def _cbc_bound(log_path: str) -> float | None:
    import re

    text = open(log_path).read()
    for pat in (r"Lower bound:\s*([-\d.eE+]+)", r"best possible\s*([-\d.eE+]+)"):
        hits = re.findall(pat, text)
        if hits:
            return float(hits[-1])
    m = re.findall(r"Objective value:\s*([-\d.eE+]+)", text)
    return float(m[-1]) if m and "Result - Optimal solution found" in text else None


def _cbc_stopped(log_path: str) -> bool:
    text = open(log_path).read()
    return "Result - Optimal solution found" not in text
