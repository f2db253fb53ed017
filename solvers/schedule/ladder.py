"""Per-period optima of one model: its stage-1 MILP at each period's rate, fewer solves by monotonicity.

A model's buckets keep their shares in every period, so period t asks for one rate r[t] of the same
mix, and F(r), the cheapest plan serving r, does not decrease in r (a plan for r serves any r' <= r
with its routes scaled down). Periods are visited by rising rate:
  - a plan already found whose routes, scaled to r[t], keep every group within C2 (reach >= r[t])
    and fit period t's availability serves r[t]; it is optimal within the gap when its cost is within
    the gap of the best bound at a lower rate (F(r[t]) >= F(r') >= bound(r') for r' <= r[t]);
  - otherwise stage 1's MILP for the model alone at r[t] (solvers/stage1/milp.py) runs, built once
    per model and re-solved with each period's demand and availability.
Every plan found is a candidate for the start-aware choice (solvers/schedule/starts.py), and so is
every plan trimmed to each lower period's rate (same groups, fewer replicas: rising to the higher
period then starts only the replicas added). Each bound
is the model's alone, under period t's full availability: a relaxation, so their sums are valid
lower bounds per period.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import pulp

from gpumix.planner.errors import InfeasibleError, NoSolutionError
from gpumix.planner.problem import BucketKey, Config, Problem
from gpumix.planner.schedule import Schedule
from gpumix.solvers.result import INNER_GAP, Deadline, Status, closed
from gpumix.solvers.stage1 import milp
from gpumix.solvers.stage1.presolve import drop_dominated

STEP_FLOOR_S = 0.05  # no MILP gets less
STEP_SHARE = 0.25  # at most this share of what is left for one MILP
RETRY_SHARE, RETRY_FLOOR_S = 0.2, 1.0  # a MILP that found nothing in its share, again on the caller's time


@dataclass(frozen=True)
class Candidate:
    """One plan of one model: replicas, routes at `rate`, and how far its routes scale."""

    replicas: dict[Config, int]
    routes: dict[tuple[Config, BucketKey], float]  # at `rate`
    rate: float  # req/s the routes carry
    reach: float  # the highest rate the routes, scaled, carry within C2
    cost: float  # $/h

    def routes_at(self, rate: float) -> dict[tuple[Config, BucketKey], float]:
        f = rate / self.rate if self.rate > 0 else 0.0
        return {key: v * f for key, v in self.routes.items()} if f > 0 else {}


EMPTY = Candidate({}, {}, 0.0, 0.0, 0.0)  # no replicas: serves a period without demand


@dataclass
class Ladder:
    """A model's per-period optima: candidate plans, which serves each period best, and bounds."""

    model: str
    rates: list[float]  # r[t]
    candidates: list[Candidate] = field(default_factory=lambda: [EMPTY])
    best: list[int] = field(default_factory=list)  # period -> candidate index of its optimum
    bound: list[float] = field(default_factory=list)  # period -> lower bound on F(r[t]), $/h
    proven: bool = True  # every period's optimum within the gap
    solves: int = 0

    def serves(self, j: int, t: int, available: dict) -> bool:
        """Candidate j carries period t's rate (scaled routes) within period t's availability."""
        c = self.candidates[j]
        r = self.rates[t]
        if r <= 0:
            return True
        if c.reach < r * (1 - 1e-9):  # scaled routes may exceed C2 by float noise only
            return False
        return fits(c.replicas, available)


def fits(replicas: dict[Config, int], available: dict) -> bool:
    used: dict[str, int] = {}
    for c, k in replicas.items():
        used[c.gpu] = used.get(c.gpu, 0) + c.tp * k
    return all(available.get(g) is None or u <= available[g] for g, u in used.items())


def model_rates(schedule: Schedule, model: str) -> list[float]:
    ks = schedule.base.buckets[model]
    return [sum(schedule.demand[t][(model, k)] for k in ks) for t in range(schedule.periods)]


def candidate(problem: Problem, replicas: dict, routes: dict, rate: float) -> Candidate:
    load: dict[Config, float] = {}
    for (c, k), v in routes.items():
        load[c] = load.get(c, 0.0) + v / problem.capacity[c][k]
    scale = min((problem.max_utilization * replicas[c] / v for c, v in load.items() if v > 0), default=math.inf)
    cost = sum(problem.config_cost(c) * k for c, k in replicas.items())
    return Candidate(dict(replicas), dict(routes), rate, rate * scale if math.isfinite(scale) else 0.0, cost)


@dataclass
class _PeriodMilp:
    """One model's stage-1 MILP (solvers/stage1/milp.py: C1, C2, C3, C5), built once and re-solved
    per period with that period's demand (C1's right-hand sides, C5's coefficients) and C3's
    availability: PuLP builds a model once instead of once a period."""

    problem: Problem  # the model alone, at its peak demand
    model: milp.MilpModel
    demand_rows: dict[BucketKey, pulp.LpConstraint]
    open_rows: dict[tuple[Config, BucketKey], pulp.LpConstraint]

    @classmethod
    def build(cls, problem: Problem, availability: tuple[dict, ...]) -> "_PeriodMilp":
        m = problem.models[0]
        finite = {g: max(a[g] for a in availability if a.get(g) is not None)
                  for g in problem.price if any(a.get(g) is not None for a in availability)}
        model = milp.build(problem, available=finite, strengthen=False)
        prob = model.prob
        demand_rows = {k: prob.get_constraint_by_name(milp.var_name("C1_demand", 0, *k)) for k in problem.buckets[m]}
        open_rows = {}
        for i, c in enumerate(problem.configs):
            for k in problem.capacity[c]:
                row = model.x[c, k] - problem.demand[(m, k)] * model.n[c] <= 0
                open_rows[c, k] = row
                prob += row, milp.var_name("C5_open", i, *k)
        return cls(problem, model, demand_rows, open_rows)

    def solve(self, demand: dict, available: dict, time_limit: float | None, mip_gap: float):
        """Stage 1's MILP at one period's demand and availability -> (HighsResult, problem)."""
        for k, row in self.demand_rows.items():
            row.changeRHS(demand[(self.problem.models[0], k)])
        for (c, k), row in self.open_rows.items():
            row.expr[self.model.n[c]] = -demand[(c.model, k)]
            row.modified = True
        for g, row in self.model.avail.items():
            row.changeRHS(available[g] if available.get(g) is not None else BIG)
        problem = replace(self.problem, demand=dict(demand), available={g: available.get(g) for g in self.problem.price})
        return milp.solve(self.model, time_limit, mip_gap), problem


BIG = 10_000_000  # GPUs: no limit, in a period whose type is unlimited while another period's is not


def ladder(schedule: Schedule, model: str, deadline: Deadline, mip_gap: float,
           accept_gap: float | None = None, retry: Deadline | None = None) -> Ladder:
    """The model's per-period optima (module docstring). A plan found for a lower rate is taken for
    period t when it reaches r[t] within `accept_gap` (default mip_gap) of the bound below.
    InfeasibleError when the model alone cannot be served in some period; NoSolutionError when a
    MILP finds no plan in time."""
    base, _ = drop_dominated(schedule.base.restrict(models={model}))
    out = Ladder(model, model_rates(schedule, model))
    T = schedule.periods
    out.best, out.bound = [0] * T, [0.0] * T
    accept = mip_gap if accept_gap is None else max(accept_gap, mip_gap)
    period_milp = None
    below: dict[tuple, float] = {}  # availability -> the best bound at a lower rate
    for t in sorted(range(T), key=lambda t: (out.rates[t], t)):
        r = out.rates[t]
        if r <= 0:
            continue
        avail = schedule.available[t]
        same = tuple(sorted((g, -1 if a is None else a) for g, a in avail.items() if g in base.price))
        last_bound = below.get(same, 0.0)
        fit = [j for j in range(1, len(out.candidates)) if out.serves(j, t, avail)]
        j = min(fit, key=lambda j: (out.candidates[j].cost, j), default=None)
        if j is not None and closed(out.candidates[j].cost, last_bound, accept):
            out.best[t], out.bound[t] = j, min(last_bound, out.candidates[j].cost)
            out.proven &= closed(out.candidates[j].cost, last_bound, mip_gap)
            continue
        if period_milp is None:
            period_milp = _PeriodMilp.build(base, schedule.available)
        demand = {key: v for key, v in schedule.demand[t].items() if key[0] == model}
        res, sub = period_milp.solve(demand, avail, deadline.left(STEP_SHARE, floor=STEP_FLOOR_S), mip_gap * INNER_GAP)
        out.solves += 1
        if res.status == Status.NO_SOLUTION and retry is not None and retry.remaining() > STEP_FLOOR_S:
            # this model's share ran out before HiGHS found a plan: a second try on the caller's time
            res, sub = period_milp.solve(demand, avail, retry.left(RETRY_SHARE, floor=RETRY_FLOOR_S),
                                         mip_gap * INNER_GAP)
            out.solves += 1
        if res.status == Status.INFEASIBLE:
            raise InfeasibleError(f"model {model!r} cannot be served in period {t} ({r:g} req/s) within that "
                                  "period's availability, even alone")
        if res.status == Status.NO_SOLUTION:
            raise NoSolutionError(f"no plan for model {model!r} in period {t} within the time limit")
        replicas, routes = milp.extract(sub, period_milp.model)
        new = candidate(sub, replicas, routes, r)
        if j is not None and out.candidates[j].cost <= new.cost:  # the old plan is no dearer
            out.best[t] = j
        else:
            out.candidates.append(new)
            out.best[t] = len(out.candidates) - 1
        out.bound[t] = min(max(res.bound, last_bound), out.candidates[out.best[t]].cost)
        out.proven &= res.status == Status.OPTIMAL or closed(out.candidates[out.best[t]].cost, out.bound[t], mip_gap)
        below[same] = out.bound[t]
    _add_trimmed(schedule, base, out)
    return out


def _add_trimmed(schedule: Schedule, problem: Problem, out: Ladder) -> None:
    """Every plan found for a higher rate, trimmed to each period's rate: dearer per hour than the
    period's optimum, perhaps, but made of the same groups as the higher period's, so rising to it
    starts only the replicas added (starts.py chooses)."""
    solved = list(out.candidates[1:])
    seen = {tuple(sorted(c.replicas.items())) for c in solved}
    for t in range(schedule.periods):
        r = out.rates[t]
        if r <= 0:
            continue
        for plan in solved:
            if plan.rate > r * (1 + 1e-9):
                c = trim(problem, plan, r)
                key = tuple(sorted(c.replicas.items()))
                if key not in seen and fits(c.replicas, schedule.available[t]):
                    seen.add(key)
                    out.candidates.append(c)


def trim(problem: Problem, plan: Candidate, rate: float) -> Candidate:
    """A plan found for a higher rate, its routes scaled down to `rate` and each group cut to the
    fewest replicas its load then needs."""
    routes = plan.routes_at(rate)
    load: dict[Config, float] = {}
    for (c, k), v in routes.items():
        load[c] = load.get(c, 0.0) + v / problem.capacity[c][k]
    replicas = {c: min(n, max(1, math.ceil(load[c] / problem.max_utilization - 1e-9)))
                for c, n in plan.replicas.items() if load.get(c, 0.0) > 0}
    return candidate(problem, replicas, {key: v for key, v in routes.items() if key[0] in replicas}, rate)
