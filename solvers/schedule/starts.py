"""The start-aware choice of one model's plans over the periods: a shortest path (or cycle).

Given a model's candidate plans (solvers/schedule/ladder.py), period t may use any candidate j that
serves r[t] within period t's availability, at h[t] * cost[j]; moving from candidate i to j costs
the starts sum_c sigma[c] * max(0, n_j[c] - n_i[c]). The cheapest sequence is a shortest path over
the periods (dynamic programming); with cyclic periods the path returns to where it started, so the
DP runs once per candidate of the period with the fewest candidates and closes the cycle there.
Candidates that cost more in a period than every start they could avoid are dropped first.
Periods in `fixed` use the one candidate given (coupled periods, solvers/schedule/decompose.py).
"""
from __future__ import annotations

import math

from gpumix.planner.problem import Config
from gpumix.planner.schedule import Schedule
from gpumix.solvers.schedule.ladder import Ladder


def start_cost(sigma: dict[Config, float], a: dict[Config, int], b: dict[Config, int]) -> float:
    """$ of the replicas started going from counts a to counts b."""
    return sum(sigma[c] * (k - a.get(c, 0)) for c, k in b.items() if k > a.get(c, 0))


def choose(schedule: Schedule, lad: Ladder, fixed: dict[int, int] | None = None) -> list[int]:
    """The candidate index per period of the cheapest schedule of one model (module docstring)."""
    fixed = fixed or {}
    T, cands, sigma = schedule.periods, lad.candidates, schedule.start_cost
    full = [sum(sigma[c] * k for c, k in cand.replicas.items()) for cand in cands]
    most = max(full, default=0.0) * 2  # no path saves more starts than twice the dearest fleet's
    options: list[list[int]] = []
    for t in range(T):
        if t in fixed:
            options.append([fixed[t]])
            continue
        ok = [j for j in range(len(cands)) if lad.serves(j, t, schedule.available[t])]
        best = schedule.hours[t] * cands[lad.best[t]].cost
        options.append([j for j in ok if schedule.hours[t] * cands[j].cost <= best + most + 1e-12]
                       or [lad.best[t]])
    if all(len(o) == 1 for o in options) or not any(full):
        return [o[0] if len(o) == 1 else lad.best[t] for t, o in enumerate(options)]
    trans: dict[tuple[int, int], float] = {}

    def move(i: int, j: int) -> float:
        if (i, j) not in trans:
            trans[i, j] = start_cost(sigma, cands[i].replicas, cands[j].replicas) if i != j else 0.0
        return trans[i, j]

    anchor = min(range(T), key=lambda t: (len(options[t]), t)) if schedule.cyclic else 0
    order = [(anchor + d) % T for d in range(T)]
    best_total, best_path = math.inf, None
    for first in options[anchor]:
        # cost[j]: cheapest path from `first` at the anchor to candidate j at the current period
        entry = 0.0 if schedule.cyclic else full[first]  # an empty fleet before period 0
        cost = {first: schedule.hours[anchor] * cands[first].cost + entry}
        back: list[dict[int, int]] = []
        for t in order[1:]:
            nxt, arg = {}, {}
            for j in options[t]:
                stay = schedule.hours[t] * cands[j].cost
                i = min(cost, key=lambda i: (cost[i] + move(i, j), i))
                nxt[j], arg[j] = cost[i] + move(i, j) + stay, i
            cost = nxt
            back.append(arg)
        close = {j: v + (move(j, first) if schedule.cyclic else 0.0) for j, v in cost.items()}
        last = min(close, key=lambda j: (close[j], j))
        if close[last] < best_total - 1e-12:
            path = [last]
            for arg in reversed(back):
                path.append(arg[path[-1]])
            best_total, best_path = close[last], list(reversed(path))
    out = [0] * T
    for t, j in zip(order, best_path):
        out[t] = j
    return out
