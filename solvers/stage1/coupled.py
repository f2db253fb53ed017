"""Binding availability: Lagrangian bound, CP-SAT master over per-model candidate plans, joint MILP.

Relax C3 with multipliers lambda_g >= 0 (one per GPU type with finite availability A_g):
    L(lambda) = sum_m phi_m(lambda) - sum_g lambda_g * A_g,
    phi_m(lambda) = min cost of model m alone at prices p_g + lambda_g   (its own C1, C2, C3)
Every L(lambda) is a lower bound on every plan (weak duality), using each sub-MILP's proven bound
for phi_m. lambda starts at the joint LP relaxation's dual of C3, where L(lambda) is at least the
LP bound (each model keeps its integrality); Polyak subgradient steps follow while time allows.
A model whose lambda=0 optimum touches no priced type keeps phi_m(lambda) = phi_m(0) (prices only rise elsewhere), so only the models on priced types re-solve.

Every sub-MILP solution is a candidate plan (a column) for its model, and the CP-SAT master
(solvers/stage1/master.py) picks one column per model within availability. Large neighbourhood
search then re-solves a
few competing models at a time against what the others leave, and the incumbent warm-starts the
joint MILP (HiGHS), whose own bound can only raise the final lower bound.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from gpumix.planner.problem import Config, Problem
from gpumix.solvers.result import INNER_GAP, Deadline, Status, closed
from gpumix.solvers.stage1 import milp
from gpumix.solvers.stage1.master import (FLOOR_S, Column, column, greedy_repair, master, plan_of, same_plan,
                                          usage_of)

LNS_SIZE = 12  # models re-solved together in one neighbourhood
SUBGRADIENT_MAX = 40  # Lagrangian evaluations at most
SMALL_CONFIGS = 600  # joint models this small (S size) go straight to HiGHS after a first incumbent

# Time: shares of what is left when a step starts, each at most its cap (seconds)
FIRST_MASTER = (0.05, 2.0)  # the master over the lambda=0 plans, and after each subgradient step
DUALS_LP = (0.25, 60.0)  # the joint LP relaxation (C3's duals)
DUALS_MASTER = (0.1, 5.0)  # the master after pricing at the duals
SUBGRADIENT_SHARE = 0.35  # of the coupled phase's time for the Lagrangian steps
PRICED_SHARE = 0.1  # one priced sub-MILP
IMPROVE_ALL = (0.35, 120.0)  # all competing models re-solved at once
LNS_SHARE = 0.4  # neighbourhood search, then LNS_STEP_S at most (and a sixth of it) a round
LNS_STEP_S = 5.0


@dataclass(frozen=True)
class Priced:
    """One model's sub-MILP at prices p + lambda."""

    bound: float  # a lower bound on phi_m(lambda)
    column: Column | None  # its plan, None when HiGHS found none in time


@dataclass(frozen=True)
class LagrangianValue:
    bound: float  # L(lambda): a lower bound on every plan
    usage: dict[str, int]  # GPUs of each finite type the per-model optima at lambda use


@dataclass
class CoupledResult:
    replicas: dict[Config, int]
    routes: dict
    cost: float
    bound: float
    optimal: bool
    stats: dict = field(default_factory=dict)


def _slice(deadline: Deadline, share: float, cap: float) -> float | None:
    """share of what is left, at most cap; None (no limit) without a deadline."""
    return deadline.left(share, cap=cap, floor=FLOOR_S) if deadline.limited else None


@dataclass
class _Run:
    """What the steps of solve_coupled share: the columns, the incumbent and the bounds so far."""

    problem: Problem
    deadline: Deadline
    mip_gap: float
    whole_buckets: bool
    say: object
    workers: int
    seed: int
    finite: dict[str, int]  # gpu -> A_g, the types with finite availability
    columns: dict[str, list[Column]]  # model -> its candidate plans, the lambda=0 optimum first
    base_bound: dict[str, float]  # model -> lower bound on phi_m(0)
    total: float | None  # seconds the phase had at its start
    subs: dict[str, Problem] = field(default_factory=dict)
    stats: dict = field(default_factory=lambda: {"lagrangian_iters": 0})
    ub: float = math.inf
    incumbent: dict[str, int] | None = None  # model -> column index
    best_lb: float = 0.0
    lam: dict[str, float] = field(default_factory=dict)  # the multipliers last evaluated
    usage: dict[str, int] = field(default_factory=dict)  # GPUs the per-model optima at lam use

    def base_usage(self, m: str) -> dict[str, int]:
        return self.columns[m][0].usage

    def open(self) -> bool:
        """An incumbent whose gap is not closed yet."""
        return self.incumbent is not None and not closed(self.ub, self.best_lb, self.mip_gap)

    def master(self, step: tuple[float, float], hint=None) -> None:
        share, cap = step
        limit = self.deadline.left(share, cap=cap, floor=FLOOR_S)
        self.take(master(self.problem, self.columns, limit, hint, self.workers, self.seed).choice)

    def take(self, choice: dict[str, int] | None) -> None:
        if choice is not None:
            cost = sum(self.columns[m][j].cost for m, j in choice.items())
            if cost < self.ub - 1e-9:
                self.ub, self.incumbent = cost, choice

    def lagrangian(self, lam: dict[str, float]) -> LagrangianValue | None:
        """L(lam) and the usage of the per-model optima at lam; None if a model has no plan."""
        problem = self.problem
        priced = {g for g, v in lam.items() if v > 0}
        price = {g: p + lam.get(g, 0.0) for g, p in problem.price.items()}
        bound, usage = 0.0, {g: 0 for g in self.finite}
        for m in problem.models:
            col = self.columns[m][0]
            if not priced.intersection(self.base_usage(m)) or self.deadline.remaining() < 0.1:
                # prices only rise, so phi_m(lambda) >= phi_m(0) >= its bound: valid when the
                # lambda=0 optimum pays no multiplier (then equal) and when time is up (then weaker)
                bound += self.base_bound[m]
            else:
                if m not in self.subs:
                    self.subs[m] = problem.restrict(models={m})
                res = _solve_priced(self.subs[m], price, self.deadline, self.mip_gap, self.whole_buckets)
                if res is None:
                    return None
                bound += res.bound
                if res.column is not None:
                    col = res.column
                    if all(not same_plan(col, c) for c in self.columns[m]):
                        self.columns[m].append(col)
            for g in self.finite:
                usage[g] += col.usage.get(g, 0)
        self.stats["lagrangian_iters"] += 1
        return LagrangianValue(bound - sum(lam[g] * a for g, a in self.finite.items()), usage)


def solve_coupled(problem: Problem, first: dict[str, milp.MilpResult], deadline: Deadline,
                  mip_gap: float, whole_buckets: bool, say, *, workers: int = 2,
                  seed: int = 0) -> CoupledResult | None:
    """None when no plan within availability was found (the caller reports infeasibility).

    Order: a first plan (CP-SAT master over the per-model plans, else greedy repair) -> LP duals
    of C3 -> Lagrangian bound and new columns at those prices -> master again -> subgradient steps,
    each followed by the master -> the competing models re-solved jointly, then large
    neighbourhood search (a few of them at a time, the rest fixed) -> the full joint MILP,
    warm-started, whose bound joins the Lagrangian one.
    """
    run = _Run(problem, deadline, mip_gap, whole_buckets, say, workers, seed,
               finite={g: a for g, a in problem.available.items() if a is not None},
               columns={m: [column(problem, r)] for m, r in first.items()},
               base_bound={m: r.bound for m, r in first.items()},
               total=deadline.remaining() if deadline.limited else None)
    _first_plan(run)
    run.best_lb = sum(run.base_bound.values())
    if len(problem.configs) <= SMALL_CONFIGS:  # HiGHS alone closes small joint models fastest
        return _joint(run)
    if not _at_duals(run) or not _subgradient(run):
        return None
    if run.open():
        _neighbourhoods(run)
    run.stats["lagrangian_bound"] = round(run.best_lb, 6)
    run.stats["columns"] = sum(len(c) for c in run.columns.values())
    return _joint(run)


def _first_plan(run: _Run) -> None:
    """A plan first (time limits are real): master over the lambda=0 plans, else greedy repair."""
    run.master(FIRST_MASTER)
    if run.incumbent is None:
        run.take(greedy_repair(run.problem, run.columns, run.finite, run.deadline, run.mip_gap, run.whole_buckets))
    if run.incumbent is not None:
        run.say(f"incumbent ${run.ub:,.2f}/h")


def _at_duals(run: _Run) -> bool:
    """The joint LP's bound and C3 duals; the Lagrangian there, its plans mixed in by the master.
    False when a model has no plan at those prices."""
    problem, finite = run.problem, run.finite
    run.lam = {g: 0.0 for g in finite}
    run.usage = {g: sum(run.base_usage(m).get(g, 0) for m in problem.models) for g in finite}
    lp = milp.availability_duals(problem, _slice(run.deadline, *DUALS_LP)) if run.deadline.remaining() > 0.3 else None
    duals = None
    if lp is not None:
        run.best_lb = max(run.best_lb, lp.bound * (1 - 1e-9))  # the LP relaxation's optimum is a bound too
        duals = lp.duals
    if duals and any(duals.get(g, 0) > 0 for g in finite):
        run.lam = {g: duals.get(g, 0.0) for g in finite}
        out = run.lagrangian(run.lam)
        if out is None:
            return False
        run.best_lb, run.usage = max(run.best_lb, out.bound), out.usage
        run.say(f"Lagrangian bound ${run.best_lb:,.2f}/h at the LP duals")
        # mix the plans priced at the duals with the ones we have
        run.master(DUALS_MASTER, hint=run.incumbent)
        if run.incumbent is not None:
            run.say(f"incumbent ${run.ub:,.2f}/h from {sum(len(c) for c in run.columns.values())} candidate plans")
    return True


def _subgradient(run: _Run) -> bool:
    """Polyak steps from the LP duals: each evaluation adds plans priced at new multipliers, and the
    master recombines them (this is where the best plans of hard instances came from). False when a
    model has no plan at some multipliers."""
    finite, total = run.finite, run.total
    theta, stall, lb_now = 1.0, 0, run.best_lb
    while (run.incumbent is not None and run.stats["lagrangian_iters"] < SUBGRADIENT_MAX
           and (total is None or run.deadline.remaining() > (1 - SUBGRADIENT_SHARE) * total)
           and not closed(run.ub, run.best_lb, run.mip_gap)):
        excess = {g: run.usage[g] - a for g, a in finite.items()}
        norm = sum(v * v for g, v in excess.items() if v > 0 or run.lam[g] > 0)
        if norm == 0 or theta < 1e-3:
            break
        step = theta * max(run.ub - lb_now, 1e-6 * run.ub) / norm
        run.lam = {g: max(0.0, run.lam[g] + step * excess[g]) for g in finite}
        out = run.lagrangian(run.lam)
        if out is None:
            return False
        lb_now, run.usage = out.bound, out.usage
        if lb_now > run.best_lb + 1e-9:
            run.best_lb, stall = lb_now, 0
        else:
            stall += 1
            if stall >= 2:
                theta, stall = theta / 2, 0
        run.master(FIRST_MASTER, hint=run.incumbent)
        run.say(f"Lagrangian {run.stats['lagrangian_iters']}: bound ${run.best_lb:,.2f}/h, incumbent ${run.ub:,.2f}/h")
    return True


def _neighbourhoods(run: _Run) -> None:
    """The competing models (on scarce types) re-solved jointly, the rest fixed; then large
    neighbourhood search over a few of them at a time."""
    problem, columns, incumbent = run.problem, run.columns, run.incumbent
    scarce = {g for g in run.finite if run.lam.get(g, 0) > 0 or run.usage.get(g, 0) > run.finite[g]}
    movers = [m for m in problem.models
              if scarce.intersection(run.base_usage(m)) or scarce.intersection(columns[m][incumbent[m]].usage)]
    if len(movers) > LNS_SIZE and run.deadline.remaining() > 1.0:  # first all competing models at once
        if _improve(problem, columns, incumbent, set(movers), run.mip_gap, run.whole_buckets,
                    _slice(run.deadline, *IMPROVE_ALL)):
            run.ub = sum(columns[m][j].cost for m, j in incumbent.items())
            run.say(f"incumbent ${run.ub:,.2f}/h from the joint MILP over {len(movers)} competing models")
    lns = run.deadline.sub(LNS_SHARE)
    window = lns.remaining()
    rng = random.Random(run.seed)
    rounds = 0
    while movers and (not lns.limited and rounds < 3 * LNS_SIZE or lns.limited and not lns.expired()):
        rounds += 1
        group = set(movers if len(movers) <= LNS_SIZE else rng.sample(movers, LNS_SIZE))
        better = _improve(problem, columns, incumbent, group, max(run.mip_gap, 1e-3), run.whole_buckets,
                          _slice(lns, 1.0, min(window / 6, LNS_STEP_S)))
        if better is not None:
            run.ub = sum(columns[m][j].cost for m, j in incumbent.items())
            run.say(f"incumbent ${run.ub:,.2f}/h (neighbourhood search, round {rounds})")
        if len(movers) <= LNS_SIZE:
            break
    run.stats["lns_rounds"] = rounds


def _joint(run: _Run) -> CoupledResult | None:
    """The full joint MILP, warm-started from the incumbent, for the rest of the time."""
    problem, incumbent, ub, bound, mip_gap = run.problem, run.incumbent, run.ub, run.best_lb, run.mip_gap
    replicas, routes = plan_of(run.columns, incumbent) if incumbent is not None else ({}, {})
    optimal = incumbent is not None and closed(ub, bound, mip_gap)
    if not optimal and run.deadline.remaining() > 0.2:
        run.say(f"joint MILP warm-started at ${ub:,.2f}/h" if incumbent else "joint MILP, no incumbent yet")
        joint = milp.run(problem, run.deadline.left(), mip_gap=mip_gap * INNER_GAP,
                         whole_buckets=run.whole_buckets, start=(replicas, routes) if incumbent else None)
        run.stats["joint_s"] = round(joint.wall_s, 3)
        if joint.status == Status.INFEASIBLE:
            return None
        if joint.objective is not None and joint.objective < ub - 1e-9:
            ub, replicas, routes = joint.objective, joint.replicas, joint.routes
        bound = max(bound, joint.bound)
        optimal = joint.status == Status.OPTIMAL or closed(ub, bound, mip_gap)
    if not replicas:
        return None
    cost = sum(problem.config_cost(c) * k for c, k in replicas.items())
    return CoupledResult(replicas, routes, cost, min(bound, cost), optimal, run.stats)


def _improve(problem: Problem, columns, incumbent: dict[str, int], group: set[str], mip_gap: float,
             whole_buckets: bool, time_limit: float | None) -> bool | None:
    """Re-solve `group` jointly against the availability the others leave; on a cheaper plan,
    update `incumbent` (and `columns`) in place and return True."""
    residual = dict(problem.available)
    for m, j in incumbent.items():
        if m not in group:
            for g, u in columns[m][j].usage.items():
                if residual.get(g) is not None:
                    residual[g] -= u
    sub = problem.restrict(models=group, available=residual)
    start = plan_of(columns, {m: incumbent[m] for m in group})
    res = milp.run(sub, time_limit, mip_gap * INNER_GAP, whole_buckets, start=start)
    if res.objective is None:
        return None
    now = sum(columns[m][incumbent[m]].cost for m in group)
    if res.objective >= now - 1e-9:
        return None
    for m in sorted(group):
        col = column(sub, milp.MilpResult(Status.FEASIBLE, None, 0.0, *_split(res, m)))
        j = next((j for j, c in enumerate(columns[m]) if same_plan(c, col)), None)
        if j is None:
            columns[m].append(col)
            j = len(columns[m]) - 1
        incumbent[m] = j
    return True


def _split(res: milp.MilpResult, model: str) -> tuple[dict, dict]:
    return ({c: k for c, k in res.replicas.items() if c.model == model},
            {key: v for key, v in res.routes.items() if key[0].model == model})


def _solve_priced(sub: Problem, price: dict, deadline: Deadline, mip_gap: float,
                  whole_buckets: bool) -> Priced | None:
    """The model alone at `price`; None when infeasible."""
    model = milp.build(sub, whole_buckets=whole_buckets, price=price)
    res = milp.solve(model, deadline.left(PRICED_SHARE, floor=FLOOR_S), mip_gap * INNER_GAP)
    bound = res.bound
    if res.status == Status.INFEASIBLE:
        return None
    if res.status == Status.NO_SOLUTION:
        return Priced(bound, None)
    replicas, routes = milp.extract(sub, model)
    cost = sum(sub.config_cost(c) * k for c, k in replicas.items())
    return Priced(bound, Column(cost, replicas, routes, usage_of(replicas)))
