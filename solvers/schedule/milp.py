"""The schedule MILP over a Schedule (planner/schedule.py): PuLP model, HiGHS solve, read back.

Variables   n[c,t] in Z+ replicas of config c in period t; x[c,k,t] >= 0 req/s of bucket k routed
            to c in period t; s[c,t] >= 0 replicas of c started entering period t.
Objective   min sum_t h[t] * sum_c (p[g] + lambda[g,t]) * tp * n[c,t] + sum_{c,t} sigma[c] * s[c,t]
            (lambda = 0 but in the Lagrangian of solvers/schedule/decompose.py)
C1_demand   sum_c x[c,k,t] = d[m,k,t]                      every bucket served, every period
C2_capacity sum_k x[c,k,t] / mu[c,k] <= U * n[c,t]
C3_avail    sum_{c on g} tp * n[c,t] <= A[g,t]             (A[g,t] given)
C5_open     x[c,k,t] <= d[m,k,t] * n[c,t]                  (stage 1's strengthening, where C2 does not imply it)
D1_start    s[c,t] >= n[c,t] - n[c,t-1]                    t-1 of period 0: the last period when cyclic;
                                                           without cyclic n[c,-1] = 0 (an empty fleet)
C1..C5 are stage 1's rows (solvers/stage1/milp.py) in every period. With sigma = 0 (starts=False) the
model separates by period: its optimum is the sum of the per-period optima.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pulp

from gpumix.planner.problem import BucketKey, Config
from gpumix.planner.schedule import Schedule
from gpumix.solvers.highs import run_highs
from gpumix.solvers.result import Deadline, HighsResult, Status
from gpumix.solvers.stage1.milp import var_name

Counts = list[dict[Config, int]]  # period -> config -> replicas
Routes = list[dict[tuple[Config, BucketKey], float]]  # period -> (config, bucket) -> req/s


@dataclass
class ScheduleModel:
    prob: pulp.LpProblem
    n: dict[tuple[Config, int], pulp.LpVariable]
    x: dict[tuple[Config, BucketKey, int], pulp.LpVariable]
    s: dict[tuple[Config, int], pulp.LpVariable]
    hour_cost: pulp.LpAffineExpression  # sum_t h[t] p[g] tp n[c,t]
    start_cost: pulp.LpAffineExpression  # sum sigma[c] s[c,t]
    avail: dict[tuple[str, int], pulp.LpConstraint] = field(default_factory=dict)


@dataclass(frozen=True)
class ScheduleResult:
    status: Status
    objective: float | None  # the incumbent's objective, None without one
    bound: float  # valid lower bound on the objective (inf when infeasible)
    counts: Counts = field(default_factory=list)
    routes: Routes = field(default_factory=list)
    wall_s: float = 0.0


def build(schedule: Schedule, available: tuple[dict, ...] | None = None,
          lam: dict[tuple[str, int], float] | None = None, starts: bool = True) -> ScheduleModel:
    """The MILP of the module docstring; `available` replaces A[g,t], `lam` adds lambda[g,t] $/GPU-h;
    starts=False leaves the start costs out of the objective (the per-period optima)."""
    problem = schedule.base
    avail = schedule.available if available is None else available
    lam = lam or {}
    T = schedule.periods
    prob = pulp.LpProblem("gpumix_schedule", pulp.LpMinimize)
    n, x, s = {}, {}, {}
    for i, c in enumerate(problem.configs):
        for t in range(T):
            n[c, t] = prob.add_variable(var_name("n", i, t), lowBound=0, cat=pulp.LpInteger)
            s[c, t] = prob.add_variable(var_name("s", i, t), lowBound=0)
            for k in problem.capacity[c]:
                if schedule.demand[t][(c.model, k)] > 0:
                    x[c, k, t] = prob.add_variable(var_name("x", i, *k, t), lowBound=0)
    hour_cost = pulp.lpSum(schedule.hours[t] * (problem.price[c.gpu] + lam.get((c.gpu, t), 0.0)) * c.tp * n[c, t]
                           for c in problem.configs for t in range(T))
    start_cost = pulp.lpSum(schedule.start_cost[c] * s[c, t] for c in problem.configs for t in range(T)
                            if schedule.start_cost[c] > 0)
    prob += (hour_cost + start_cost if starts else hour_cost), "cost"

    by_bucket: dict[tuple[str, BucketKey, int], list[Config]] = {}
    for (c, k, t) in x:
        by_bucket.setdefault((c.model, k, t), []).append(c)
    U = problem.max_utilization
    for mi, m in enumerate(problem.models):
        for k in problem.buckets[m]:
            for t in range(T):
                d = schedule.demand[t][(m, k)]
                if d > 0:
                    prob += pulp.lpSum(x[c, k, t] for c in by_bucket.get((m, k, t), [])) == d, \
                        var_name("C1_demand", mi, *k, t)
    for i, c in enumerate(problem.configs):
        mu = problem.capacity[c]
        for t in range(T):
            ks = [k for k in mu if (c, k, t) in x]
            if ks:
                prob += pulp.lpSum((1.0 / mu[k]) * x[c, k, t] for k in ks) <= U * n[c, t], \
                    var_name("C2_capacity", i, t)
            for k in ks:
                d = schedule.demand[t][(c.model, k)]
                if d < U * mu[k]:  # else implied by C2
                    prob += x[c, k, t] <= d * n[c, t], var_name("C5_open", i, *k, t)
            prev = schedule.previous(t)
            if starts and schedule.start_cost[c] > 0:
                prob += s[c, t] >= n[c, t] - (n[c, prev] if prev is not None else 0), var_name("D1_start", i, t)
    rows = {}
    for g in sorted(problem.price):
        cs = [c for c in problem.configs if c.gpu == g]
        for t in range(T):
            a = avail[t].get(g)
            if a is not None and cs:
                rows[g, t] = pulp.lpSum(c.tp * n[c, t] for c in cs) <= a
                prob += rows[g, t], var_name("C3_avail", g, t)
    return ScheduleModel(prob, n, x, s, hour_cost, start_cost, rows)


def start_values(model: ScheduleModel, schedule: Schedule, counts: Counts, routes: Routes) -> dict[str, float]:
    """A known schedule as a MIP start (variable name -> value), its starts included."""
    values = {}
    for t, now in enumerate(counts):
        for c, k in now.items():
            if (c, t) in model.n:
                values[model.n[c, t].name] = float(k)
        prev = schedule.previous(t)
        for c in schedule.base.configs:
            before = counts[prev].get(c, 0) if prev is not None else 0
            values[model.s[c, t].name] = float(max(0, now.get(c, 0) - before))
    for t, rs in enumerate(routes):
        for (c, k), v in rs.items():
            if (c, k, t) in model.x:
                values[model.x[c, k, t].name] = v
    return values


def extract(schedule: Schedule, model: ScheduleModel) -> tuple[Counts, Routes]:
    """Counts and routes per period: routes under 1e-9 or onto closed groups dropped, each bucket
    rescaled to its exact demand. Counts stay as the solver chose them: an idle replica kept over a
    short trough can be cheaper than starting it again."""
    counts, routes = [], []
    for t in range(schedule.periods):
        n = {c: int(round(model.n[c, t].varValue or 0.0)) for c in schedule.base.configs}
        x = {(c, k): v.varValue or 0.0 for (c, k, tt), v in model.x.items() if tt == t}
        counts.append({c: k for c, k in n.items() if k > 0})
        routes.append(rescale(schedule.demand[t], counts[-1], x))
    return counts, routes


def rescale(demand: dict, counts: dict[Config, int], x: dict) -> dict:
    """Routes onto open groups only, each bucket scaled to exactly its demand (solver noise out)."""
    x = {(c, k): v for (c, k), v in x.items() if v > 1e-9 and counts.get(c, 0) > 0}
    per_bucket: dict = {}
    for (c, k), v in x.items():
        per_bucket[(c.model, k)] = per_bucket.get((c.model, k), 0.0) + v
    return dict(sorted(((c, k), v * demand[(c.model, k)] / per_bucket[(c.model, k)]) for (c, k), v in x.items()))


def run(schedule: Schedule, time_limit: float | None = None, mip_gap: float = 1e-6,
        available: tuple[dict, ...] | None = None, starts: bool = True,
        start: tuple[Counts, Routes] | None = None, threads: int | None = None,
        lam: dict | None = None) -> ScheduleResult:
    """Build, solve, extract. The objective and bound are the model's (with lam: priced). The time
    limit covers the build too (PuLP takes seconds for a joint model of many models)."""
    deadline = Deadline.start(time_limit)
    model = build(schedule, available, lam, starts)
    values = start_values(model, schedule, *start) if start is not None else None
    res: HighsResult = run_highs(model.prob, deadline.left(floor=0.05), mip_gap, threads, start=values)
    bound = res.bound if math.isfinite(res.bound) or res.status == Status.INFEASIBLE else 0.0
    if not res.status.has_plan:
        return ScheduleResult(res.status, None, bound, wall_s=res.wall_s)
    counts, routes = extract(schedule, model)
    return ScheduleResult(res.status, res.objective, bound, counts, routes, res.wall_s)
