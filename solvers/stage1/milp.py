"""Stage 1 as one MILP over a Problem (PuLP model, HiGHS solve), read back without trusting LpStatus.

Variables   n[c] in Z+ replicas of config c = (m, g, t);  x[c,k] >= 0 req/s of bucket k routed to c;
            (whole_buckets only) y[c,k] in {0,1}: bucket k goes to config c alone.
Objective   min sum_c p[g] * t * n[c]
C1_demand   sum_c x[c,k] = d[m,k]
C2_capacity sum_k x[c,k] / mu[c,k] <= U * n[c]
C3_avail    sum_{c on g} t * n[c] <= A[g]           (A[g] given)
C4_whole    x[c,k] <= d[m,k] * y[c,k],  sum_c y[c,k] = 1   (whole_buckets: Melange-style routing)
C5_open     x[c,k] <= d[m,k] * n[c]      (valid: one replica can take the whole bucket only if it is
            open; it tightens the LP relaxation where demand is small next to one replica's capacity,
            the facility-location strengthening; skipped where C2 already implies it)

HiGHS runs through solvers/highs.py, which reads status, objective and dual bound from highspy
itself (PuLP maps HiGHS's time-limit status to "Optimal").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pulp

from gpumix.planner.problem import BucketKey, Config, Problem
from gpumix.solvers.highs import run_highs
from gpumix.solvers.result import Deadline, HighsResult, Status


@dataclass(frozen=True)
class MilpResult:
    status: Status
    objective: float | None  # cost of the incumbent, None without one
    bound: float  # valid lower bound on the optimum (inf when infeasible)
    replicas: dict[Config, int] = field(default_factory=dict)
    routes: dict[tuple[Config, BucketKey], float] = field(default_factory=dict)
    wall_s: float = 0.0


@dataclass
class MilpModel:
    prob: pulp.LpProblem
    n: dict[Config, pulp.LpVariable]
    x: dict[tuple[Config, BucketKey], pulp.LpVariable]
    avail: dict[str, pulp.LpConstraint] = field(default_factory=dict)  # C3 rows, for their duals


def var_name(*parts) -> str:
    """A solver-safe name for a variable or row keyed by domain parts."""
    return "_".join(str(p) for p in parts).replace(" ", "").replace("-", "m").replace(".", "p").replace("/", "s")


_name = var_name


def build(problem: Problem, whole_buckets: bool = False, available: dict | None = None,
          price: dict | None = None, strengthen: bool = True) -> MilpModel:
    """The MILP of the module docstring. `available`/`price` override the problem's (sub-problems);
    strengthen=False leaves out C5 (the plain textbook model, for baselines)."""
    avail = problem.available if available is None else available
    price = problem.price if price is None else price
    prob = pulp.LpProblem("gpumix_stage1", pulp.LpMinimize)
    n = {c: prob.add_variable(_name("n", i), lowBound=0, cat=pulp.LpInteger)
         for i, c in enumerate(problem.configs)}
    x = {(c, k): prob.add_variable(_name("x", i, *k), lowBound=0)
         for i, c in enumerate(problem.configs) for k in problem.capacity[c]}
    prob += pulp.lpSum(price[c.gpu] * c.tp * n[c] for c in problem.configs), "cost"

    index = {c: i for i, c in enumerate(problem.configs)}
    by_bucket: dict[tuple[str, BucketKey], list[Config]] = {}
    for (c, k) in x:
        by_bucket.setdefault((c.model, k), []).append(c)
    for mi, m in enumerate(problem.models):
        for k in problem.buckets[m]:
            d = problem.demand[(m, k)]
            cs = by_bucket.get((m, k), [])
            prob += pulp.lpSum(x[c, k] for c in cs) == d, _name("C1_demand", mi, *k)
            if whole_buckets and cs:
                y = {c: prob.add_variable(_name("y", index[c], *k), cat=pulp.LpBinary) for c in cs}
                prob += pulp.lpSum(y.values()) == 1, _name("C4_one", mi, *k)
                for c in cs:
                    prob += x[c, k] <= d * y[c], _name("C4_whole", index[c], *k)
    for i, c in enumerate(problem.configs):
        mu = problem.capacity[c]
        prob += (pulp.lpSum((1.0 / mu[k]) * x[c, k] for k in mu)
                 <= problem.max_utilization * n[c]), _name("C2_capacity", i)
        for k in mu if strengthen else ():
            d = problem.demand[(c.model, k)]
            if d < problem.max_utilization * mu[k]:  # else implied by C2
                prob += x[c, k] <= d * n[c], _name("C5_open", i, *k)
    avail_rows = {}
    for g in sorted(price):
        if avail.get(g) is not None:
            cs = [c for c in problem.configs if c.gpu == g]
            if cs:
                avail_rows[g] = pulp.lpSum(c.tp * n[c] for c in cs) <= avail[g]
                prob += avail_rows[g], _name("C3_avail", g)
    return MilpModel(prob, n, x, avail_rows)


def solve(model: MilpModel, time_limit: float | None = None, mip_gap: float = 1e-6,
          threads: int | None = None, msg: bool = False,
          start: dict[str, float] | None = None) -> HighsResult:
    """run_highs for the stage-1 model: a missing bound becomes 0 (all prices are >= 0)."""
    res = run_highs(model.prob, time_limit, mip_gap, threads, msg, start)
    if not math.isfinite(res.bound) and res.status != Status.INFEASIBLE:
        res = replace(res, bound=0.0)
    return res


def extract(problem: Problem, model: MilpModel) -> tuple[dict[Config, int], dict[tuple[Config, BucketKey], float]]:
    n = {c: int(round(v.varValue or 0.0)) for c, v in model.n.items()}
    x = {key: max(v.varValue or 0.0, 0.0) for key, v in model.x.items()}
    return clean(problem, n, x)


def clean(problem: Problem, n: dict[Config, int], x: dict) -> tuple[dict[Config, int], dict]:
    """Drop solver noise: routes under 1e-9 or onto unused configs, rescale each bucket to its exact
    demand, and trim every group to the fewest replicas its load needs (never more than the solver's)."""
    x = {(c, k): v for (c, k), v in x.items() if v > 1e-9 and n.get(c, 0) > 0}
    per_bucket: dict[tuple[str, BucketKey], float] = {}
    for (c, k), v in x.items():
        per_bucket[(c.model, k)] = per_bucket.get((c.model, k), 0.0) + v
    x = {(c, k): v * problem.demand[(c.model, k)] / per_bucket[(c.model, k)] for (c, k), v in x.items()}
    load: dict[Config, float] = {}
    for (c, k), v in x.items():
        load[c] = load.get(c, 0.0) + v / problem.capacity[c][k]
    replicas = {}
    for c, count in n.items():
        if c in load and count > 0:
            need = max(1, math.ceil(load[c] / problem.max_utilization - 1e-9))
            replicas[c] = min(count, need)
    return replicas, dict(sorted(x.items()))


def run(problem: Problem, time_limit: float | None = None, mip_gap: float = 1e-6,
        whole_buckets: bool = False, available: dict | None = None, threads: int | None = None,
        start: tuple[dict, dict] | None = None) -> MilpResult:
    """Build, solve and extract in one call; `start` = (replicas, routes) of a known plan. The time
    limit covers the build too (PuLP takes seconds to build a joint model of 1000 models)."""
    deadline = Deadline.start(time_limit)
    model = build(problem, whole_buckets=whole_buckets, available=available)
    time_limit = deadline.left(floor=0.05)
    values = None
    if start is not None:
        replicas, routes = start
        values = {model.n[c].name: float(k) for c, k in replicas.items() if c in model.n}
        values.update({model.x[key].name: v for key, v in routes.items() if key in model.x})
    res = solve(model, time_limit, mip_gap, threads, start=values)
    if not res.status.has_plan:
        return MilpResult(res.status, None, res.bound, wall_s=res.wall_s)
    replicas, routes = extract(problem, model)
    cost = sum(problem.config_cost(c) * k for c, k in replicas.items())
    return MilpResult(res.status, cost, min(res.bound, cost), replicas, routes, res.wall_s)


@dataclass(frozen=True)
class LpDuals:
    bound: float  # the joint LP relaxation's optimum: a lower bound on every plan
    duals: dict[str, float]  # gpu -> lambda_g >= 0, the multiplier of its C3 row


def availability_duals(problem: Problem, time_limit: float | None = None) -> LpDuals | None:
    """The joint LP relaxation: its optimum (a valid lower bound) and the multipliers lambda_g >= 0
    of C3 (where the Lagrangian starts); None if the LP does not solve to optimality in time."""
    deadline = Deadline.start(time_limit)
    model = build(problem)
    lp = run_highs(model.prob, deadline.left(floor=0.05), mip=False)
    if lp.status != Status.OPTIMAL:
        return None
    return LpDuals(lp.objective, {g: max(0.0, -(model.avail[g].pi or 0.0)) if g in model.avail else 0.0
                                  for g in problem.available})
