"""Drop dominated configurations before solving.

Config c' of a model dominates c when it costs no more per replica, serves every bucket c serves
at least as fast (mu[c',k] >= mu[c,k]), and availability cannot stop the swap (c' is on a GPU type
with unlimited availability, or on c's type at a TP degree no larger). Replacing each replica of c
by one of c' then keeps every plan feasible and no dearer, so some optimal plan avoids c: the
optimum, and every lower bound on it, are unchanged.
"""
from __future__ import annotations

import numpy as np

from gpumix.planner.problem import Config, Problem


def drop_dominated(problem: Problem) -> tuple[Problem, int]:
    keep: list[Config] = []
    dropped = 0
    for m in problem.models:
        cs = list(problem.configs_of(m))
        if len(cs) < 2:
            keep += cs
            continue
        ks = problem.buckets[m]
        mu = np.array([[problem.capacity[c].get(k, 0.0) for k in ks] for c in cs])  # [C, K]
        cost = np.array([problem.config_cost(c) for c in cs])
        free = np.array([problem.available.get(c.gpu) is None for c in cs])
        gpu = np.array([c.gpu for c in cs])
        tp = np.array([c.tp for c in cs])
        # dom[j, i]: c_j dominates c_i
        ge = (mu[:, None, :] >= mu[None, :, :]).all(axis=2)
        cheaper = cost[:, None] <= cost[None, :]
        swap_ok = free[:, None] | ((gpu[:, None] == gpu[None, :]) & (tp[:, None] <= tp[None, :]))
        dom = ge & cheaper & swap_ok
        np.fill_diagonal(dom, False)
        # identical pairs dominate each other: keep the first in the problem's order
        strict = (mu[:, None, :] > mu[None, :, :]).any(axis=2) | (cost[:, None] < cost[None, :])
        order = np.arange(len(cs))
        dom &= strict | (order[:, None] < order[None, :])
        dominated = dom.any(axis=0)
        keep += [c for c, d in zip(cs, dominated) if not d]
        dropped += int(dominated.sum())
    if not dropped:
        return problem, 0
    kept = set(keep)
    return Problem(
        models=problem.models,
        buckets=problem.buckets,
        demand=problem.demand,
        configs=tuple(c for c in problem.configs if c in kept),
        capacity={c: problem.capacity[c] for c in problem.configs if c in kept},
        price=problem.price,
        available=problem.available,
        max_utilization=problem.max_utilization,
        source=problem.source,
    ), dropped
