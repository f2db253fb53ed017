"""The one HiGHS runner: any PuLP model on HiGHS, with status, objective and dual bound read from
highspy itself.

PuLP maps HiGHS's time-limit status to "Optimal" (coin-or/pulp 445, 649), so the status, objective
and bound come from the highspy model PuLP leaves in `prob.solverModel`.
"""
from __future__ import annotations

import math
import os
import sys
import time

import highspy
import pulp

from gpumix.solvers.result import HighsResult, Status

_banner_done = False


def _swallow_banner() -> None:
    """HiGHS prints its banner to fd 1 the first time a Highs object is made in a process, before
    any option can be set; stdout must stay clean for `--format json`, so make that first one with
    fd 1 pointed at /dev/null."""
    global _banner_done
    if _banner_done:
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    _banner_done = True


class _HighsWithStart(pulp.HiGHS):
    """PuLP's HiGHS interface, plus a MIP start handed to Highs.setSolution before the run."""

    def __init__(self, start: dict[str, float] | None = None, **kw):
        super().__init__(**kw)
        self.start = start

    def callSolver(self, lp):
        if self.start:
            sol = highspy.HighsSolution()
            sol.col_value = [float(self.start.get(v.name, 0.0)) for v in lp.variables()]
            sol.value_valid = True
            lp.solverModel.setSolution(sol)
        super().callSolver(lp)


def run_highs(prob: pulp.LpProblem, time_limit: float | None = None, mip_gap: float = 1e-6,
              threads: int | None = None, msg: bool = False, start: dict[str, float] | None = None,
              mip: bool = True) -> HighsResult:
    """Solve `prob` (its LP relaxation with mip=False; its duals are then on the rows). The bound is
    -inf when HiGHS has none, inf when infeasible (our objectives are bounded below)."""
    _swallow_banner()
    t0 = time.perf_counter()
    kw = {} if mip else {"mip": False}
    solver = _HighsWithStart(start=start, msg=msg,
                             timeLimit=None if time_limit is None else max(time_limit, 0.01),
                             gapRel=mip_gap, threads=threads, random_seed=0, **kw)
    prob.solve(solver)
    h: highspy.Highs = prob.solverModel
    status = h.getModelStatus()
    info = h.getInfo()
    has_solution = info.primal_solution_status == 2  # kSolutionStatusFeasible
    objective = info.objective_function_value if has_solution else None
    is_mip = mip and prob.isMIP()
    bound = info.mip_dual_bound if is_mip else (objective if objective is not None else -math.inf)
    S = highspy.HighsModelStatus
    if status == S.kOptimal:
        out = Status.OPTIMAL
        if not is_mip or not math.isfinite(bound):
            bound = objective
    elif status in (S.kInfeasible, S.kUnboundedOrInfeasible):
        out, bound = Status.INFEASIBLE, math.inf
    elif has_solution:
        out = Status.FEASIBLE
    else:
        out = Status.NO_SOLUTION
    if not math.isfinite(bound) and out != Status.INFEASIBLE:
        bound = -math.inf
    return HighsResult(out, objective, bound, time.perf_counter() - t0)
