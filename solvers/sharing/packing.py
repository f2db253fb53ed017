"""Shared sets, packed (`gpumix plan --share-gpus`): the models the pooled primal shares on one set
type into the fewest single sets, every model at once (bins_model), and a primal plan's cost.

Per set: P2 time sum f <= U, P3 memory sum mem <= B, S4 latency (planner/sharing.py), loads rounded
up and capacities down (TIME_SCALE per set's worth of time, memory in MiB), so every packing is a
valid set of single-set groups. First fit decreasing gives the hint and an upper bound on sets; CP-SAT
bin packing then looks for fewer. A primal plan (SharePlan) costs its GPUs at the problem's prices, or
with instance shapes the nodes stage 2 (solvers/stage2/packing.py) packs its replicas and sets onto.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ortools.sat.python import cp_model

from gpumix.planner.problem import Config, Problem
from gpumix.planner.sharing import SetItem, SharedSet, SharingModel
from gpumix.solvers.cpsat import CpParams, cp_solver, cp_status
from gpumix.solvers.result import Deadline
from gpumix.solvers.stage2 import packing as stage2

if TYPE_CHECKING:
    from gpumix.solvers.sharing.pooled import ShareParams

COST_SCALE = 10_000  # per $/h (primal only: its costs are recomputed)
TIME_SCALE = 1_000_000  # per set's worth of time
MEM_UNIT = 2 ** 20  # bytes: memory in MiB
PACK_TIME_S = 2.0  # CP-SAT bin packing of one set type, per attempt (and stage 2 costing a plan)
PACK_SHARE = 0.1  # of what is left, for the set packing of one type (at most PACK_TIME_S)
FLOOR_S = 0.05  # no solver call gets less


@dataclass(frozen=True)
class SharePlan:
    """A primal plan: dedicated replicas and routes beside shared sets."""

    cost: float  # $/h (node prices with instance shapes)
    replicas: dict
    routes: dict
    optimal: bool  # its dedicated parts were proven optimal
    sets: tuple[SharedSet, ...] | list = ()


@dataclass(frozen=True)
class Candidate:
    model: str
    gpu: str
    tp: int
    f: float  # sets' worth of time at the model's whole demand
    mem: float  # bytes per GPU on one set carrying the whole demand
    low: float  # least bytes per GPU on any set hosting it
    step: int = 0  # least decode step on the set, microseconds (rounded up): S4
    tpot: int | None = None  # TPOT SLO, microseconds (rounded down); None: no latency data


def us_up(seconds: float) -> int:
    return math.ceil(seconds * 1e6)


def latency_fits(cs) -> bool:
    """S4 on candidates sharing one set, in rounded microseconds."""
    cs = list(cs)
    tpots = [c.tpot for c in cs if c.tpot is not None]
    return not tpots or sum(c.step for c in cs) <= min(tpots)


def latency_rows(cm, here) -> None:
    """S4 in a CP-SAT bin: here = [(candidate, in-bin literal)]. For each member i:
    sum_j step_j x_j <= tpot_i + (sum of all steps) (1 - x_i). Left out where the steps of all
    candidates fit that TPOT anyway."""
    total = sum(c.step for c, _ in here)
    for c, v in here:
        if c.tpot is not None and total > c.tpot:
            cm.add(sum(d.step * u for d, u in here) <= c.tpot + total * (1 - v))


def fits_one_set(problem: Problem, sharing: SharingModel, cand: Candidate) -> bool:
    return cand.f <= problem.max_utilization and cand.mem <= sharing.budget[cand.gpu] and latency_fits([cand])


def share_cp_solver(time_limit: float | None, params: ShareParams) -> cp_model.CpSolver:
    return cp_solver(None if time_limit is None else max(time_limit, FLOOR_S), params.workers, params.seed)


def pack(problem: Problem, sharing: SharingModel, gpu: str, tp: int, cands: list[Candidate],
         time_limit: float | None, params: ShareParams) -> list[tuple[str, ...]]:
    """Models on one set type into the fewest single sets (P2, P3, S4 per set), conservatively rounded."""
    U, budget = problem.max_utilization, sharing.budget[gpu]
    items = sorted(cands, key=lambda c: (-max(c.mem / budget, c.f / U), c.model))
    t_cap, m_cap = math.floor(U * TIME_SCALE), math.floor(budget / MEM_UNIT)
    w = [(math.ceil(c.f * TIME_SCALE), math.ceil(c.mem / MEM_UNIT)) for c in items]
    bins: list[list[int]] = []  # first fit decreasing: the hint and the upper bound on sets
    load: list[list[int]] = []
    for i, (ft, fm) in enumerate(w):
        for b, (lt, lm) in enumerate(load):
            if lt + ft <= t_cap and lm + fm <= m_cap and latency_fits([items[j] for j in bins[b]] + [items[i]]):
                bins[b].append(i)
                load[b] = [lt + ft, lm + fm]
                break
        else:
            bins.append([i])
            load.append([ft, fm])
    lower = max(math.ceil(sum(x[0] for x in w) / t_cap), math.ceil(sum(x[1] for x in w) / m_cap))
    if len(bins) > lower:
        cm = cp_model.CpModel()
        K = len(bins)
        x = {(i, b): cm.new_bool_var(f"x_{i}_{b}") for i in range(len(items)) for b in range(min(i + 1, K))}
        use = [cm.new_bool_var(f"open_{b}") for b in range(K)]
        for i in range(len(items)):
            cm.add_exactly_one(x[(i, b)] for b in range(min(i + 1, K)))
        for b in range(K):
            mine = [i for i in range(len(items)) if (i, b) in x]
            cm.add(sum(w[i][0] * x[(i, b)] for i in mine) <= t_cap * use[b])
            cm.add(sum(w[i][1] * x[(i, b)] for i in mine) <= m_cap * use[b])
            latency_rows(cm, [(items[i], x[(i, b)]) for i in mine])
            if b + 1 < K:
                cm.add(use[b] >= use[b + 1])
        for b, members in enumerate(bins):
            cm.add_hint(use[b], True)
            for i in members:
                if (i, b) in x:
                    cm.add_hint(x[(i, b)], True)
        cm.minimize(sum(use))
        solver = share_cp_solver(time_limit, params)
        if cp_status(solver.solve(cm)).has_plan and solver.objective_value < K:
            bins = [[i for i in range(len(items)) if (i, b) in x and solver.value(x[(i, b)])] for b in range(K)]
            bins = [b for b in bins if b]
    return [tuple(sorted(items[i].model for i in b)) for b in bins]


def pack_assignment(problem, sharing, cands, choice, params, deadline: Deadline) -> list[SharedSet]:
    by_type: dict[tuple, list[Candidate]] = {}
    for m, s in choice.items():
        if s is not None:
            by_type.setdefault(s, []).append(next(c for c in cands[m] if (c.gpu, c.tp) == s))
    return [SharedSet(g, t, 1, models) for (g, t), cs in sorted(by_type.items())
            for models in pack(problem, sharing, g, t, cs,
                               deadline.left(PACK_SHARE, cap=PACK_TIME_S, floor=FLOOR_S), params)]


class _StopAtBound(cp_model.CpSolverSolutionCallback):
    """Stop as soon as a solution is within the gap of the pooled bound (CP-SAT cannot see it)."""

    def __init__(self, target: float):
        super().__init__()
        self.target = target

    def on_solution_callback(self):
        if self.objective_value <= self.target:
            self.stop_search()


@dataclass(frozen=True)
class BinsChoice:
    sets: list[SharedSet]  # single sets, each hosting its models
    dedicated: list[str]  # models left on their dedicated plans


@dataclass
class _Bins:
    cm: cp_model.CpModel
    x: dict  # (m, s, b) -> model m on set b of type s
    opened: dict  # (s, b) -> set b of type s open
    y: dict  # m -> m dedicated


def bins_model(problem, sharing, cands, per_model, types, start, bound, time_limit, params) -> BinsChoice | None:
    """Every model at once into single sets of `types` or onto its dedicated plan (CP-SAT):
      x[m,s,b] model m on set b of type s;  o[s,b] set open;  y[m] dedicated
      sum x + y = 1;  per set: sum f x <= U o, sum mem x <= B o (rounded up / down);  o[s,b] >= o[s,b+1];
      availability over open sets and the dedicated plans' GPUs;  min sum p t o + sum D_m y.
    Sets of a type are interchangeable, so the i-th model of a type only uses its first i+1 sets.
    None when some model has no place or CP-SAT finds nothing in time."""
    mdl = _bins_build(problem, sharing, cands, per_model, types, start)
    if mdl is None:
        return None
    _bins_hint(mdl, start)
    solver = share_cp_solver(time_limit, params)
    status = cp_status(solver.solve(mdl.cm, _StopAtBound(bound * (1 + params.mip_gap) * COST_SCALE)))
    if not status.has_plan:
        return None
    sets = []
    for (s, b), v in sorted(mdl.opened.items()):
        models = tuple(sorted(m for (m, ss, bb), xv in mdl.x.items() if ss == s and bb == b and solver.value(xv)))
        if models:
            sets.append(SharedSet(s[0], s[1], 1, models))
    return BinsChoice(sets, [m for m, v in mdl.y.items() if solver.value(v)])


def _bins_build(problem, sharing, cands, per_model, types, start) -> _Bins | None:
    U = problem.max_utilization
    cm = cp_model.CpModel()
    on_type: dict[tuple, list[Candidate]] = {s: [] for s in types}
    for m in problem.models:
        for c in cands.get(m, []):
            if (c.gpu, c.tp) in on_type and fits_one_set(problem, sharing, c):
                on_type[(c.gpu, c.tp)].append(c)
    start_count: dict[tuple, int] = {}
    for st in start:
        start_count[(st.gpu, st.tp)] = start_count.get((st.gpu, st.tp), 0) + 1
    x, opened, cost = {}, {}, []
    for s, cs in on_type.items():
        K = min(len(cs), start_count.get(s, 0) + 1)
        avail = problem.available.get(s[0])
        if avail is not None:
            K = min(K, avail // s[1])
        budget = sharing.budget[s[0]]
        t_cap, m_cap = math.floor(U * TIME_SCALE), math.floor(budget / MEM_UNIT)
        for b in range(K):
            opened[(s, b)] = cm.new_bool_var(f"o_{s[0]}_{s[1]}_{b}")
            cost.append((math.ceil(problem.price[s[0]] * s[1] * COST_SCALE), opened[(s, b)]))
            if b:
                cm.add(opened[(s, b - 1)] >= opened[(s, b)])
        for i, c in enumerate(cs):
            for b in range(min(i + 1, K)):
                x[(c.model, s, b)] = cm.new_bool_var(f"x_{c.model}_{s[0]}_{s[1]}_{b}")
        for b in range(K):  # P2, P3 and S4 per set
            here = [(c, x[(c.model, s, b)]) for c in cs if (c.model, s, b) in x]
            cm.add(sum(math.ceil(c.f * TIME_SCALE) * v for c, v in here) <= t_cap * opened[(s, b)])
            cm.add(sum(math.ceil(c.mem / MEM_UNIT) * v for c, v in here) <= m_cap * opened[(s, b)])
            latency_rows(cm, here)
    y = {}
    for i, m in enumerate(problem.models):  # each model on one set or dedicated
        terms = [v for (mm, _, _), v in x.items() if mm == m]
        if per_model[m].objective is not None:
            y[m] = cm.new_bool_var(f"y_{i}")
            cost.append((math.ceil(per_model[m].objective * COST_SCALE), y[m]))
            terms.append(y[m])
        if not terms:
            return None
        cm.add_exactly_one(terms)
    for g in sorted({s[0] for s in types}):  # availability
        if problem.available.get(g) is not None:
            ded_use = [(sum(c.tp * k for c, k in per_model[m].replicas.items() if c.gpu == g), v) for m, v in y.items()]
            cm.add(sum(s[1] * v for (s, _), v in opened.items() if s[0] == g)
                   + sum(u * v for u, v in ded_use if u) <= problem.available[g])
    cm.minimize(sum(w * v for w, v in cost))
    return _Bins(cm, x, opened, y)


def _bins_hint(mdl: _Bins, start) -> None:
    """The hint: the packed pooled solution, sets renumbered per type; the rest dedicated."""
    placed = {m for st in start for m in st.models}
    seen: dict[tuple, int] = {}
    for st in start:
        s = (st.gpu, st.tp)
        b = seen.get(s, 0)
        seen[s] = b + 1
        if (s, b) in mdl.opened:
            mdl.cm.add_hint(mdl.opened[(s, b)], True)
        for m in st.models:
            if (m, s, b) in mdl.x:
                mdl.cm.add_hint(mdl.x[(m, s, b)], True)
    for m, v in mdl.y.items():
        mdl.cm.add_hint(v, m not in placed)


def plan_cost(problem: Problem, replicas: dict[Config, int], sets: list[SharedSet], params: ShareParams,
           deadline: Deadline) -> float:
    """The plan's $/hour: per GPU, or with instance shapes the nodes stage 2 packs it onto."""
    if params.instances:
        need = {(c, False): k for c, k in replicas.items()}
        for i, st in enumerate(sets):
            need[(SetItem(i, st.gpu, st.tp), False)] = st.count
        limit = deadline.left(cap=PACK_TIME_S, floor=FLOOR_S)
        pk = stage2.pack(need, params.instances, params=CpParams(limit, params.workers, params.seed),
                         gpu_caps=problem.available)
        return pk.cost if pk.status.has_plan else math.inf
    return (sum(problem.config_cost(c) * k for c, k in replicas.items())
            + sum(problem.price[s.gpu] * s.tp * s.count for s in sets))
