"""The monolithic MILP baseline of bench/solver.py: stage 1 as one model, solved by HiGHS or CBC."""
from __future__ import annotations

from gpumix.planner.problem import Problem


def monolithic(problem: Problem, time_limit: float, solver: str = "highs", log_path: str | None = None):
    """The obvious formulation as one MILP (C1-C3, no decomposition, no strengthening), solved by
    HiGHS or CBC through PuLP: the baseline of bench/solver.py. Returns (status, cost, bound)."""
    import math

    import pulp

    from gpumix.solvers.stage1 import milp

    model = milp.build(problem, strengthen=False)
    if solver == "highs":
        res = milp.solve(model, time_limit, mip_gap=1e-4)
        return res.status.value, res.objective, res.bound
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
