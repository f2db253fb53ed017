"""Dominated configurations of a schedule: stage 1's rule (solvers/stage1/presolve.py) plus starts.

c' dominates c when it costs no more per hour, serves every bucket at least as fast, availability
cannot stop the swap (c' on a type unlimited in every period, or on c's type at a TP degree no
larger) and it costs no more to start (sigma[c'] <= sigma[c]). Replacing every replica of c by one
of c' in every period keeps each period feasible, adds no start and costs no more: some optimal
schedule avoids c, so the optimum and every bound on it stay as they are.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from gpumix.planner.problem import Config
from gpumix.planner.schedule import Schedule


def drop_dominated(schedule: Schedule) -> tuple[Schedule, int]:
    problem = schedule.base
    keep: list[Config] = []
    for m in problem.models:
        cs = list(problem.configs_of(m))
        if len(cs) < 2:
            keep += cs
            continue
        ks = problem.buckets[m]
        mu = np.array([[problem.capacity[c].get(k, 0.0) for k in ks] for c in cs])  # [C, K]
        cost = np.array([problem.config_cost(c) for c in cs])
        sigma = np.array([schedule.start_cost[c] for c in cs])
        free = np.array([all(a.get(c.gpu) is None for a in schedule.available) for c in cs])
        gpu = np.array([c.gpu for c in cs])
        tp = np.array([c.tp for c in cs])
        # dom[j, i]: c_j dominates c_i
        dom = ((mu[:, None, :] >= mu[None, :, :]).all(axis=2) & (cost[:, None] <= cost[None, :])
               & (sigma[:, None] <= sigma[None, :])
               & (free[:, None] | ((gpu[:, None] == gpu[None, :]) & (tp[:, None] <= tp[None, :]))))
        np.fill_diagonal(dom, False)
        strict = ((mu[:, None, :] > mu[None, :, :]).any(axis=2) | (cost[:, None] < cost[None, :])
                  | (sigma[:, None] < sigma[None, :]))
        order = np.arange(len(cs))
        dom &= strict | (order[:, None] < order[None, :])  # identical pairs: keep the first
        keep += [c for c, d in zip(cs, dom.any(axis=0)) if not d]
    dropped = len(problem.configs) - len(keep)
    if not dropped:
        return schedule, 0
    kept = set(keep)
    base = replace(problem, configs=tuple(c for c in problem.configs if c in kept),
                   capacity={c: problem.capacity[c] for c in problem.configs if c in kept})
    return replace(schedule, base=base, start_cost={c: v for c, v in schedule.start_cost.items() if c in kept}), dropped
