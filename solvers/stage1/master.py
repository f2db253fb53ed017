"""Candidate plans (columns) per model and the CP-SAT master that combines them within availability.

Every sub-MILP solution is a candidate plan (a column) for its model. The master picks one column per
model:
    min sum_{m,j} cost[m,j] z[m,j]   s.t.  sum_j z[m,j] = 1 (each model one plan),
                                           sum_{m,j} usage[m,j,g] z[m,j] <= A_g (availability)
Costs are scaled to integers (COST_SCALE = 1e4 per $/h, i.e. exact for prices with <= 4 decimals);
the true cost of the chosen plan is recomputed in floating point. Without a master solution, the
greedy repair makes a first plan: models off the over-subscribed types keep their own optimum, the
others re-solve, largest first, against what is left.
"""
from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model

from gpumix.planner.problem import Config, Problem
from gpumix.solvers.cpsat import cp_solver, cp_status
from gpumix.solvers.result import Deadline, Status
from gpumix.solvers.stage1 import milp

COST_SCALE = 10_000  # per $/h
GREEDY = (0.05, 5.0)  # one greedy repair MILP: share of what is left, at most this many seconds
FLOOR_S = 0.05  # no solver call gets less


@dataclass
class Column:
    cost: float
    replicas: dict[Config, int]
    routes: dict
    usage: dict[str, int]


@dataclass(frozen=True)
class MasterChoice:
    choice: dict[str, int] | None  # model -> index of its column; None: no choice found
    proven: bool  # CP-SAT proved it optimal over these columns


def usage_of(replicas: dict[Config, int]) -> dict[str, int]:
    used: dict[str, int] = {}
    for c, k in replicas.items():
        used[c.gpu] = used.get(c.gpu, 0) + c.tp * k
    return used


def column(problem: Problem, res: milp.MilpResult) -> Column:
    cost = sum(problem.config_cost(c) * k for c, k in res.replicas.items())
    return Column(cost, res.replicas, res.routes, usage_of(res.replicas))


def master(problem: Problem, columns: dict[str, list[Column]], time_limit: float,
           hint: dict[str, int] | None = None, workers: int = 2, seed: int = 0) -> MasterChoice:
    """CP-SAT: one column per model within availability."""
    m = cp_model.CpModel()
    z = {(name, j): m.new_bool_var(f"z_{i}_{j}") for i, name in enumerate(problem.models)
         for j in range(len(columns[name]))}
    for name in problem.models:
        m.add_exactly_one(z[name, j] for j in range(len(columns[name])))
    for g, cap in sorted(problem.available.items()):
        if cap is None:
            continue
        terms = [(z[name, j], col.usage[g]) for name in problem.models
                 for j, col in enumerate(columns[name]) if col.usage.get(g)]
        if terms:
            m.add(sum(coef * var for var, coef in terms) <= cap)
    m.minimize(sum(round(col.cost * COST_SCALE) * z[name, j] for name in problem.models
                   for j, col in enumerate(columns[name])))
    if hint:
        for name, j in hint.items():
            for jj in range(len(columns[name])):
                m.add_hint(z[name, jj], jj == j)
    solver = cp_solver(max(time_limit, FLOOR_S), workers, seed)
    status = cp_status(solver.solve(m))
    if not status.has_plan:
        return MasterChoice(None, False)
    choice = {name: next(j for j in range(len(columns[name])) if solver.value(z[name, j]))
              for name in problem.models}
    return MasterChoice(choice, status == Status.OPTIMAL)


def plan_of(columns: dict[str, list[Column]], choice: dict[str, int]) -> tuple[dict, dict]:
    replicas, routes = {}, {}
    for m, j in choice.items():
        replicas.update(columns[m][j].replicas)
        routes.update(columns[m][j].routes)
    return replicas, routes


def same_plan(a: Column, b: Column) -> bool:
    return a.replicas == b.replicas


def greedy_repair(problem: Problem, columns: dict[str, list[Column]], finite: dict[str, int], deadline: Deadline,
            mip_gap: float, whole_buckets: bool) -> dict[str, int] | None:
    """A first plan within availability: models off the over-subscribed types keep their own
    optimum; the others, largest first, re-solve against what is left. Adds the columns it makes."""
    used: dict[str, int] = {}
    for m in problem.models:
        for g, u in columns[m][0].usage.items():
            used[g] = used.get(g, 0) + u
    over = {g for g, a in finite.items() if used.get(g, 0) > a}
    fixed = [m for m in problem.models if not over.intersection(columns[m][0].usage)]
    movers = sorted((m for m in problem.models if m not in fixed), key=lambda m: (-columns[m][0].cost, m))
    base = dict(finite)
    for m in fixed:
        for g, u in columns[m][0].usage.items():
            if g in base:
                base[g] -= u
    if any(v < 0 for v in base.values()):
        return None
    for _attempt in range(6):  # a model that finds nothing left moves to the front; retry
        residual, choice, failed = dict(base), {m: 0 for m in fixed}, None
        for m in movers:
            if deadline.remaining() <= 0:
                return None
            sub = problem.restrict(models={m}, available={g: residual.get(g) for g in problem.available})
            # a quick repair: 1% is plenty here, the master and the joint MILP polish it
            share, cap = GREEDY
            res = milp.run(sub, deadline.left(share, cap=cap, floor=FLOOR_S), max(mip_gap, 0.01), whole_buckets)
            if not res.status.has_plan:
                failed = m
                break
            col = column(problem, res)
            for g, u in col.usage.items():
                if g in residual:
                    residual[g] -= u
            j = next((j for j, c in enumerate(columns[m]) if same_plan(c, col)), None)
            if j is None:
                columns[m].append(col)
                j = len(columns[m]) - 1
            choice[m] = j
        if failed is None:
            return {m: choice[m] for m in problem.models}
        movers = [failed] + [m for m in movers if m != failed]
    return None
