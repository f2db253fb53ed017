"""A lower bound on a schedule's total that counts starts: the fleet-cost relaxation (an LP).

For model m let y[m,t] be the $/h of its replicas in period t. Every schedule has
B1_model   y[m,t] >= b[m,t]            the model's own per-period bound (solvers/schedule/ladder.py)
B2_period  sum_m y[m,t] >= b[t]        a period's bound over all models (stage 1 in a coupled period)
B3_rise    z[m,t] >= y[m,t] - y[m,t-1], z >= 0   (t-1 as in planner/schedule.py; y[m,-1] = 0 without cyclic)
and its starts cost at least sum_t tau[m] * z[m,t]: a model's fleet gets dearer only through the
replicas it starts, and each start costs at least tau[m] = min_c sigma[c] / (p[g] * tp) hours of the
started replica's price (min over all of m's configurations). So
    min sum_t h[t] * sum_m y[m,t] + sum_{m,t} tau[m] * z[m,t]
is a lower bound on every schedule: it adds to the per-period bound what rising from the trough to
the peak must cost, or what keeping the peak's fleet through the trough costs instead.
"""
from __future__ import annotations

import pulp

from gpumix.planner.schedule import Schedule
from gpumix.solvers.highs import run_highs
from gpumix.solvers.result import Deadline, Status
from gpumix.solvers.stage1.milp import var_name

LP_SAFETY = 1e-9  # relative: the LP optimum, shaded by float noise, stays a bound


def rise_bound(schedule: Schedule, model_bound: dict[str, list[float]], period_bound: list[float],
               deadline: Deadline, alone: dict[str, float] | None = None) -> tuple[float, dict[str, float]] | None:
    """The LP of the module docstring: (its optimum, each model's part when no B2 row couples them,
    else {}); None when HiGHS does not solve it in time."""
    problem = schedule.base
    T = schedule.periods
    tau = {m: min((schedule.start_cost[c] / problem.config_cost(c) for c in problem.configs_of(m)), default=0.0)
           for m in problem.models}
    prob = pulp.LpProblem("gpumix_schedule_bound", pulp.LpMinimize)
    y = {(m, t): prob.add_variable(var_name("y", i, t), lowBound=model_bound[m][t])
         for i, m in enumerate(problem.models) for t in range(T)}
    z = {(m, t): prob.add_variable(var_name("z", i, t), lowBound=0)
         for i, m in enumerate(problem.models) for t in range(T) if tau[m] > 0}
    # S[m] >= the relaxed start cost of model m; with a bound L[m] on model m's whole cost alone
    # (its joint MILP, `alone`), B4_alone: hours + S[m] >= L[m] (a schedule's own starts satisfy both)
    S = {m: prob.add_variable(var_name("S", i), lowBound=0) for i, m in enumerate(problem.models)}
    prob += (pulp.lpSum(schedule.hours[t] * y[m, t] for m in problem.models for t in range(T))
             + pulp.lpSum(S.values())), "cost"
    for i, m in enumerate(problem.models):
        prob += S[m] >= pulp.lpSum(tau[m] * z[m, t] for t in range(T) if (m, t) in z), var_name("B3_starts", i)
        if alone and m in alone:
            prob += (pulp.lpSum(schedule.hours[t] * y[m, t] for t in range(T)) + S[m] >= alone[m],
                     var_name("B4_alone", i))
    coupled = False
    for t in range(T):
        if period_bound[t] > sum(model_bound[m][t] for m in problem.models) + 1e-9:
            prob += pulp.lpSum(y[m, t] for m in problem.models) >= period_bound[t], var_name("B2_period", t)
            coupled = True
    for i, (m, t) in enumerate(z):
        prev = schedule.previous(t)
        prob += z[m, t] >= y[m, t] - (y[m, prev] if prev is not None else 0), var_name("B3_rise", i)
    res = run_highs(prob, deadline.left(floor=0.1), mip=False)
    if res.status != Status.OPTIMAL or res.objective is None:
        return None
    parts = {}
    if not coupled:  # the LP separates by model: each part is that model's own bound
        parts = {m: (sum(schedule.hours[t] * (y[m, t].varValue or 0.0) for t in range(T))
                     + (S[m].varValue or 0.0)) * (1 - 1e-7) for m in problem.models}
    return res.objective * (1 - LP_SAFETY), parts
