"""The schedule solver: per-model per-period optima, a start-aware choice per model, coupling by
availability per period, and the joint MILP when it is small enough to polish and prove.

1. Per model, its per-period optima (solvers/schedule/ladder.py): candidate plans and a lower bound
   per period, each the model alone under that period's availability (a relaxation).
2. Per model, the cheapest sequence of its candidates with the start costs (solvers/schedule/starts.py).
3. Availability couples the models only within a period. Where the union breaks a period's C3:
   the per-period optima fixed there when they fit; else stage 1 (solvers/stage1/decompose.py:
   Lagrangian, CP-SAT master, joint MILP) plans that period for all models, its plans become
   candidates fixed there, and its bound replaces the sum of the models' bounds. Step 2 re-runs.
4. When the joint MILP (solvers/schedule/milp.py) is small, HiGHS polishes the schedule from it as
   a MIP start for the rest of the time; its bound counts starts too.
Bound: sum_t h[t] * (period t's lower bound) is a lower bound on every schedule (each period's plan
serves that period; starts cost >= 0), and so is the joint MILP's bound; the larger one is reported.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from gpumix.planner.errors import InfeasibleError, NoSolutionError
from gpumix.planner.problem import Config
from gpumix.planner.schedule import Schedule, schedule_cost
from gpumix.solvers.result import INNER_GAP, Deadline, Status, certify, closed
from gpumix.solvers.schedule import milp, presolve
from gpumix.solvers.schedule.bound import rise_bound
from gpumix.solvers.schedule.ladder import Ladder, candidate, fits, ladder
from gpumix.solvers.schedule.starts import choose
from gpumix.solvers.stage1.decompose import SolveParams
from gpumix.solvers.stage1.decompose import solve as solve_period

Progress = Callable[[str], None]

# Time shares of what is left when a phase starts
LADDER_SHARE = 0.7  # the per-model per-period optima (spread over the models still to do)
COUPLED_SHARE = 0.5  # one coupled period's stage-1 solve, of what is left
ACCEPT_GAP = 1e-3  # a plan found for another rate serves a period when within this of its bound
POLISH_SHARE = 0.5  # of what is left after the per-period phase: models alone, joint MILP each
POLISH_STEP = 0.2  # at most this share of the polish phase for one model
JOINT_MAX_INTEGERS = 1000  # HiGHS overruns its time limit at its root node on larger joint models
JOINT_CAP_S = 10.0  # seconds of the joint MILP at most: past that it rarely improves a polished schedule


@dataclass(frozen=True)
class ScheduleSolution:
    status: Status
    total_cost: float  # $ over the horizon, starts included
    bound: float  # valid lower bound on every schedule's total, $
    counts: list[dict[Config, int]]  # period -> config -> replicas
    routes: list[dict]  # period -> (config, bucket) -> req/s
    period_cost: list[float]  # $/h of each period
    period_bound: list[float]  # lower bound on each period's $/h
    start_cost: list[float]  # $ of the starts entering each period
    per_period_total: float  # sum_t h[t] * per-period optimum (starts ignored): baseline.per_period
    peak_static: float | None  # $ over the horizon of the cheapest static plan serving every period's peak
    method: str
    wall_s: float
    stats: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return 0.0 if self.total_cost <= 0 else max(self.total_cost - self.bound, 0.0) / self.total_cost


def solve(schedule: Schedule, deadline: Deadline, mip_gap: float = 1e-4, progress: Progress | None = None,
          static_baseline: bool = True, accept_gap: float = ACCEPT_GAP) -> ScheduleSolution:
    """Steps 1-4 of the module docstring, then the peak-sized static baseline."""
    t0 = time.perf_counter()
    say = progress or (lambda _m: None)
    T, models = schedule.periods, schedule.base.models
    ladders = _per_period(schedule, deadline, mip_gap, accept_gap, say)
    run = _Coupling(schedule, ladders,
                    bound_t=[sum(ladders[m].bound[t] for m in models) for t in range(T)],
                    optimum_t=[sum(ladders[m].candidates[ladders[m].best[t]].cost for m in models) for t in range(T)],
                    proven=all(lad.proven for lad in ladders.values()))
    choice = run.resolve(deadline, mip_gap, say)
    counts = [_union(ladders, choice, t) for t in range(T)]
    routes = [{key: v for m in models
               for key, v in ladders[m].candidates[choice[m][t]].routes_at(ladders[m].rates[t]).items()}
              for t in range(T)]
    total = schedule_cost(schedule, counts)[0]
    bound = sum(h * b for h, b in zip(schedule.hours, run.bound_t))
    method = "per-period" + (" + coupled periods" if run.coupled else "")
    stats = {"models": len(models), "periods": T, "milps": sum(lad.solves for lad in ladders.values()),
             "coupled_periods": sorted(run.coupled)}
    say(f"schedule ${total:,.2f}, bound ${bound:,.2f} from the per-period optima")
    counts, routes, bound, proven, more = _improve(schedule, ladders, run, counts, routes, bound, deadline, mip_gap,
                                                   say, stats, static_baseline)
    method += more
    total, per_hour, starts = schedule_cost(schedule, counts)
    bound = min(bound, total)
    peak = _peak_static(schedule, ladders, deadline, mip_gap) if static_baseline else None
    cert = certify(total, bound, proven=proven, mip_gap=mip_gap)
    wall = time.perf_counter() - t0
    say(f"{cert.status}: ${total:,.2f} over {schedule.total_hours:g} h, bound ${bound:,.2f}, gap {cert.gap:.4%}, "
        f"{wall:.2f}s")
    return ScheduleSolution(cert.status, total, bound, counts, routes, per_hour,
                            [min(b, c) for b, c in zip(run.bound_t, per_hour)], starts,
                            sum(h * c for h, c in zip(schedule.hours, run.optimum_t)), peak, method, wall, stats)


def _per_period(schedule: Schedule, deadline: Deadline, mip_gap: float, accept_gap: float,
                say: Progress) -> dict[str, Ladder]:
    """Step 1: every model's per-period optima, LADDER_SHARE of the time spread over the models."""
    models = schedule.base.models
    phase = deadline.sub(LADDER_SHARE)
    ladders: dict[str, Ladder] = {}
    for i, m in enumerate(models):
        ladders[m] = ladder(schedule, m, phase.sub(1 / (len(models) - i)), mip_gap, accept_gap, retry=deadline)
        if (i + 1) % 50 == 0 or i + 1 == len(models):
            say(f"per-period optima {i + 1}/{len(models)} models ({sum(l.solves for l in ladders.values())} MILPs)")
    return ladders


@dataclass
class _Coupling:
    """Steps 2 and 3: the start-aware choice per model, and the periods where availability couples."""

    schedule: Schedule
    ladders: dict[str, Ladder]
    bound_t: list[float]  # period -> lower bound on its $/h
    optimum_t: list[float]  # period -> its optimum's $/h (the per-period baseline)
    proven: bool
    coupled: list[int] = field(default_factory=list)

    def resolve(self, deadline: Deadline, mip_gap: float, say: Progress) -> dict[str, list[int]]:
        schedule, ladders, models = self.schedule, self.ladders, self.schedule.base.models
        fixed: dict[str, dict[int, int]] = {m: {} for m in models}
        choice = {m: choose(schedule, ladders[m]) for m in models}
        while True:
            over = [t for t in range(schedule.periods)
                    if t not in self.coupled and not fits(_union(ladders, choice, t), schedule.available[t])]
            if not over:
                return choice
            for t in over:
                self.coupled.append(t)
                optimal = {m: ladders[m].best[t] for m in models}
                if fits(_union(ladders, optimal, t), schedule.available[t]):
                    for m in models:  # the per-period optima fit: keep them there
                        fixed[m][t] = optimal[m]
                    continue
                say(f"availability binds in period {t}: stage 1 plans it for all models together")
                self._plan_period(t, fixed, deadline, mip_gap)
            choice = {m: choose(schedule, ladders[m], fixed[m]) for m in models}

    def _plan_period(self, t: int, fixed: dict, deadline: Deadline, mip_gap: float) -> None:
        """Stage 1 over all models in period t; its plans are fixed there, its bound is the period's."""
        sol = _coupled_period(self.schedule, t, deadline, mip_gap)
        self.bound_t[t] = max(self.bound_t[t], sol.bound)
        self.optimum_t[t] = sol.cost
        self.proven &= sol.status == Status.OPTIMAL
        problem = self.schedule.period(t)
        for m, lad in self.ladders.items():
            reps = {c: k for c, k in sol.replicas.items() if c.model == m}
            rts = {key: v for key, v in sol.routes.items() if key[0].model == m}
            lad.candidates.append(candidate(problem, reps, rts, lad.rates[t]) if reps else lad.candidates[0])
            fixed[m][t] = len(lad.candidates) - 1


def _improve(schedule: Schedule, ladders: dict[str, Ladder], run: _Coupling, counts: list, routes: list,
             bound: float, deadline: Deadline, mip_gap: float, say: Progress, stats: dict,
             static_baseline: bool) -> tuple[list, list, float, bool, str]:
    """Step 4 and the bounds with starts: the fleet-cost relaxation, each model polished alone (its
    bound joins the relaxation), the joint MILP when small. -> (counts, routes, bound, proven, method)"""
    T, models = schedule.periods, schedule.base.models
    proven, method = run.proven, ""
    total = schedule_cost(schedule, counts)[0]
    reduced, dropped = presolve.drop_dominated(schedule)
    integers = len(reduced.base.configs) * T
    stats["dominated"] = dropped
    model_bound = {m: ladders[m].bound for m in models}
    rise = rise_bound(schedule, model_bound, run.bound_t, deadline)
    if rise is not None:
        bound = max(bound, rise[0])
    if not closed(total, bound, mip_gap):
        gaps = {m: schedule_cost(schedule.restrict(models={m}), [{c: k for c, k in n.items() if c.model == m}
                                                                  for n in counts])[0]
                - sum(h * b for h, b in zip(schedule.hours, model_bound[m])) for m in models}
        counts, routes, alone = _polish(reduced, counts, routes, deadline, mip_gap, say, stats, gaps)
        total = schedule_cost(schedule, counts)[0]
        method += " + models polished"
        if alone:
            rise = rise_bound(schedule, model_bound, run.bound_t, deadline, alone)
            if rise is not None:
                bound = max(bound, rise[0])
    if not closed(total, bound, mip_gap) and integers <= JOINT_MAX_INTEGERS and deadline.remaining() > 0.5:
        say(f"joint MILP over {integers} replica counts, warm-started at ${total:,.2f}")
        res = milp.run(reduced, deadline.left(0.9 if static_baseline else 1.0, floor=0.1, cap=JOINT_CAP_S),
                       mip_gap * INNER_GAP, start=(counts, routes))
        stats["joint_s"] = round(res.wall_s, 3)
        if res.status.has_plan and schedule_cost(schedule, res.counts)[0] < total - 1e-9:
            counts, routes = res.counts, res.routes
            method += " + joint MILP"
        if res.status != Status.INFEASIBLE:
            bound = max(bound, res.bound)
            proven = proven or res.status == Status.OPTIMAL
    return counts, routes, bound, proven, method


def _polish(schedule: Schedule, counts: list, routes: list, deadline: Deadline, mip_gap: float, say: Progress,
            stats: dict, gaps: dict[str, float]) -> tuple[list, list, dict[str, float]]:
    """Models alone, one joint MILP each (solvers/schedule/milp.py) against the GPUs the others leave
    in each period, warm-started from their schedule, largest `gaps` first, while POLISH_SHARE of
    the time lasts. Returns the schedule and, for models whose GPU types are unlimited in every
    period (the residual is then the full availability), the MILP's bound on that model's total."""
    phase = deadline.sub(POLISH_SHARE)
    T = schedule.periods
    mine = {m: ([{c: k for c, k in counts[t].items() if c.model == m} for t in range(T)],
                [{key: v for key, v in routes[t].items() if key[0].model == m} for t in range(T)])
            for m in schedule.base.models}
    bounds: dict[str, float] = {}
    polished = 0
    for m in sorted(mine, key=lambda m: (-gaps.get(m, 0.0), m)):
        if phase.expired() or gaps.get(m, 0.0) <= 0:
            continue
        others = [_usage({c: k for c, k in counts[t].items() if c.model != m}) for t in range(T)]
        residual = tuple({g: (None if a is None else a - others[t].get(g, 0)) for g, a in schedule.available[t].items()}
                         for t in range(T))
        residual = tuple(dict(r) for r in residual)
        sub = schedule.restrict(models={m}, available=residual)
        cost = schedule_cost(sub, mine[m][0])[0]
        res = milp.run(sub, phase.left(POLISH_STEP, floor=0.1), mip_gap * INNER_GAP, start=mine[m])
        polished += 1
        if res.status == Status.INFEASIBLE:
            continue
        if residual == tuple(schedule.available):  # nothing taken by the others: the model alone
            bounds[m] = res.bound
        elif not phase.expired():  # the model alone under the full availability, for its bound
            alone = milp.run(schedule.restrict(models={m}), phase.left(POLISH_STEP, floor=0.1),
                             mip_gap * INNER_GAP, start=mine[m])
            if alone.status != Status.INFEASIBLE:
                bounds[m] = alone.bound
        if res.status.has_plan and schedule_cost(sub, res.counts)[0] < cost - 1e-9:
            mine[m] = (res.counts, res.routes)
            counts = [dict(sorted({**{c: k for c, k in counts[t].items() if c.model != m}, **res.counts[t]}.items()))
                      for t in range(T)]
    stats["polished_models"] = polished
    say(f"polished {polished} models alone (joint MILP each)")
    routes = [{key: v for m in mine for key, v in mine[m][1][t].items()} for t in range(T)]
    return counts, routes, bounds


def _usage(replicas: dict[Config, int]) -> dict[str, int]:
    used: dict[str, int] = {}
    for c, k in replicas.items():
        used[c.gpu] = used.get(c.gpu, 0) + c.tp * k
    return used


def _union(ladders: dict[str, Ladder], choice: dict[str, list[int] | int], t: int) -> dict[Config, int]:
    out: dict[Config, int] = {}
    for m, lad in ladders.items():
        j = choice[m] if isinstance(choice[m], int) else choice[m][t]
        out.update(lad.candidates[j].replicas)
    return dict(sorted(out.items()))


def _coupled_period(schedule: Schedule, t: int, deadline: Deadline, mip_gap: float):
    try:
        return solve_period(schedule.period(t), SolveParams(deadline.left(COUPLED_SHARE, floor=0.5), mip_gap))
    except InfeasibleError as e:
        raise InfeasibleError(f"period {t}: {e}") from None
    except NoSolutionError as e:
        raise NoSolutionError(f"period {t}: {e}") from None


def _peak_static(schedule: Schedule, ladders: dict[str, Ladder], deadline: Deadline, mip_gap: float) -> float | None:
    """$ over the horizon of the cheapest static plan sized for every model's peak (every bucket's peak rate, the
    smallest availability of each type). Without finite availability it separates by model, and each
    model's plan at its peak period is the ladder's; else stage 1 plans it."""
    if all(a is None for av in schedule.available for a in av.values()):
        replicas: dict[Config, int] = {}
        for lad in ladders.values():
            t = max(range(schedule.periods), key=lambda t: (lad.rates[t], -t))
            replicas.update(lad.candidates[lad.best[t]].replicas)
    else:
        try:
            replicas = solve_period(schedule.base, SolveParams(deadline.left(floor=0.5), mip_gap)).replicas
        except (InfeasibleError, NoSolutionError):
            return None
    return schedule_cost(schedule, [replicas] * schedule.periods)[0]  # with cyclic false: its first start
