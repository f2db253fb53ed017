"""Brute-force optimum for tiny problems: enumerate replica counts in cost order, check routing
feasibility of each with an LP solved by CBC (not HiGHS, which the planner uses)."""
from __future__ import annotations

import itertools
import math

import pulp

from gpumix.planner.problem import Problem


def routing_feasible(problem: Problem, n: dict) -> bool:
    lp = pulp.LpProblem("route", pulp.LpMinimize)
    x = {(c, k): lp.add_variable(f"x{i}_{k[0]}_{k[1]}", lowBound=0)
         for i, c in enumerate(problem.configs) if n[c] > 0 for k in problem.capacity[c]}
    lp += pulp.lpSum([])
    for m in problem.models:
        for k in problem.buckets[m]:
            lp += pulp.lpSum(v for (c, kk), v in x.items() if c.model == m and kk == k) == problem.demand[(m, k)]
    for c in problem.configs:
        if n[c] > 0:
            lp += pulp.lpSum(x[c, k] / mu for k, mu in problem.capacity[c].items()) <= problem.max_utilization * n[c]
    lp.solve(pulp.PULP_CBC_CMD(msg=0))  # CBC: a different solver than the planner's HiGHS
    return pulp.LpStatus[lp.status] == "Optimal"


def brute_force_cost(problem: Problem) -> float | None:
    cs = problem.configs
    caps = []
    for c in cs:
        load = sum(problem.demand[(c.model, k)] / mu for k, mu in problem.capacity[c].items())
        caps.append(range(0, math.ceil(load / problem.max_utilization - 1e-9) + 1))
    combos = []
    for counts in itertools.product(*caps):
        n = dict(zip(cs, counts))
        used: dict[str, int] = {}
        for c, k in n.items():
            used[c.gpu] = used.get(c.gpu, 0) + c.tp * k
        if any(problem.available.get(g) is not None and u > problem.available[g] for g, u in used.items()):
            continue
        if not _relaxed_ok(problem, n):
            continue
        combos.append((sum(problem.config_cost(c) * k for c, k in n.items()), counts))
    combos.sort()
    for cost, counts in combos:
        if routing_feasible(problem, dict(zip(cs, counts))):
            return cost
    return None


def _relaxed_ok(problem: Problem, n: dict) -> bool:
    """Necessary: each bucket's demand fits in what the chosen groups could carry of it alone."""
    for m in problem.models:
        for k in problem.buckets[m]:
            cap = sum(n[c] * problem.max_utilization * problem.capacity[c][k]
                      for c in problem.configs if c.model == m and k in problem.capacity[c])
            if cap < problem.demand[(m, k)] - 1e-9:
                return False
    return True
