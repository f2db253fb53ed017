"""The one CP-SAT setup: a solver from (time limit, workers, seed, interleaving), and its status
mapped to ours.

interleave_search runs the workers' portfolio interleaved in one thread, so the same model with the
same parameters gives the same answer (plans are byte-identical run to run).
"""
from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from gpumix.solvers.result import Status


@dataclass(frozen=True)
class CpParams:
    time_limit: float | None = None  # seconds; None: no limit
    workers: int = 8
    seed: int = 0
    interleave: bool = True  # single-threaded deterministic interleaving of the portfolio

    def solver(self) -> cp_model.CpSolver:
        """A CP-SAT solver set up with these parameters."""
        return cp_solver(self.time_limit, self.workers, self.seed, self.interleave)


def cp_solver(time_limit: float | None, workers: int, seed: int, interleave: bool = True) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    if time_limit is not None:
        solver.parameters.max_time_in_seconds = time_limit
    solver.parameters.num_workers = workers
    solver.parameters.random_seed = seed
    solver.parameters.interleave_search = interleave
    return solver


def cp_status(code) -> Status:
    """CP-SAT's status as ours: MODEL_INVALID and UNKNOWN mean no solution."""
    if code == cp_model.OPTIMAL:
        return Status.OPTIMAL
    if code == cp_model.FEASIBLE:
        return Status.FEASIBLE
    if code == cp_model.INFEASIBLE:
        return Status.INFEASIBLE
    return Status.NO_SOLUTION
