"""Stage 1 with shared GPU sets (`gpumix plan --share-gpus`): which models co-locate, on what.

A model is served either by dedicated replica groups (solvers/stage1.py) or wholly by one shared
group of identical GPU sets (planner/sharing.py: time and memory per set). Sets S of types s = (g, t).

Pooled model (the lower bound), for models m and the set types s that can host m:
  y[m] in {0,1}   m on dedicated replicas, costing >= LB_m (m's own MILP bound, availability relaxed)
  z[m,s] in {0,1} m shared on type s;   N[s] in Z+ sets of type s
  P1  y[m] + sum_s z[m,s] = 1
  P2  sum_m f[m,s] z[m,s] <= U N[s]                        time, f = m's whole load in sets' worth
  P3  sum_m mem[m,s] z[m,s] <= B[s] N[s]                   memory per GPU at one set's load
  P4  sum_{m: low[m,s] > B[s]/(j+1)} z[m,s] <= j N[s]      j = 1..3: no set holds j+1 such models
  P5  sum_t t N[(g,t)] <= A[g]                             availability (the shared sets alone)
  min sum_m LB_m y[m] + sum_s p_s N[s]
The latency condition S4 (planner/sharing.py) is left out here: the model stays a relaxation.
Every plan the checker accepts maps into it: a group of c sets hosting models Q has sum_Q f <= c U,
c sets' memory >= sum_Q mem (weights sit on every set, KV at 1/c of the load on each, docs/sharing.md),
and each set holds every model of Q. So the model's proven bound (HiGHS's dual bound, read from
HiGHS itself as solvers/milp.py does) is a lower bound on every plan with sharing.

Primal: the same model with D_m (m's dedicated optimum) and only types one set can host m on
(f <= U, mem <= B, its own step within its TPOT); packing into sets and riders also keep S4; the models it shares on each type are packed into single sets (first fit
decreasing, then CP-SAT bin packing with P2, P3 per set, loads rounded up and capacities down), the dedicated ones re-solved by stage 1 under what the
sets leave of availability. Then riders (_ride): a dedicated model on k replicas of one config
(g, t) that serves all its buckets becomes a group of k sets of (g, t) hosting it and the models of
whole single sets or whole dedicated plans that fit its spare time and memory (count k: KV at 1/k
of the load), when that lowers the cost; the group uses the replicas' GPUs, so availability holds.
If the result is not cheaper than the dedicated-only plan, that plan is kept. So the primal builds
single-set groups and groups of k sets around one dedicated model's k replicas, no other groups.
With instance shapes (ShareParams.instances) the primal prices nodes, not GPUs: the pooled primal
buys instances covering its sets and the dedicated models' replicas (P6, node_milp's C6), and every
candidate plan is costed by packing it onto instances (solvers/stage2.py). The bound is unchanged:
a node of G GPUs costs at least G times its type's cheapest $/GPU-hour, which the problem's prices are.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pulp
from ortools.sat.python import cp_model

from gpumix.planner.errors import InfeasibleError, NoSolutionError
from gpumix.planner.problem import Config, Problem
from gpumix.planner.sharing import (SharedSet, SharingModel, can_serve_all, full_demand, memory_per_gpu,
                             min_memory_per_gpu, SetItem, time_fraction)
from gpumix.solvers.cpsat import CpParams, cp_solver, cp_status
from gpumix.solvers.result import Deadline, Status, certify
from gpumix.solvers.stage1 import milp
from gpumix.solvers.stage2 import packing as stage2
from gpumix.solvers.stage1.decompose import Progress, Solution, SolveParams, solve as solve_dedicated

COST_SCALE = 10_000  # per $/h (primal only: its costs are recomputed)
TIME_SCALE = 1_000_000  # per set's worth of time
MEM_UNIT = 2 ** 20  # bytes: memory in MiB
SETS_PER_BIN_CUT = 3  # P4 for j = 1..3
PACKING_SLACK = (0.0, 0.01, 0.03, 0.06)  # primal attempts: share of set memory the pooled model keeps free
PACK_TIME_S = 2.0  # CP-SAT bin packing of one set type, per attempt (and stage 2 costing a plan)
FLOOR_S = 0.05  # no solver call gets less

# Time: shares of what is left when a step starts
PER_MODEL_SHARE = 0.3  # the dedicated per-model MILPs, all together
BOUND_SHARE = 0.5  # the pooled model for the bound
PRIMAL_SHARE = 0.3  # one pooled primal (per PACKING_SLACK attempt)
PACK_SHARE = 0.1  # set packing of one type (at most PACK_TIME_S)
BINS_SHARE = 0.5  # bins_model (at most ShareParams.bins_time_limit)
REALIZE_SHARE = 0.8  # the dedicated models beside the sets, under availability
DEDICATED_SHARE = 0.9  # the dedicated-only plan, under availability
KNAPSACK_SHARE = 0.05  # one rider knapsack (at most PACK_TIME_S)


@dataclass(frozen=True)
class ShareParams:
    time_limit: float | None = None
    mip_gap: float = 1e-4
    workers: int = 8
    seed: int = 0
    progress: Progress | None = None
    bins_time_limit: float = 20.0  # seconds for the all-at-once packing (bins_model) when it runs
    instances: tuple = ()  # instance shapes: primal plans priced as nodes (stage 2), not per GPU


@dataclass(frozen=True)
class ShareSolution(Solution):
    shared: tuple[SharedSet, ...] = ()
    dedicated_only_cost: float | None = None  # the best plan without sharing that the solver saw
    unshareable: dict = field(default_factory=dict)  # model -> why it cannot be shared


@dataclass(frozen=True)
class PooledResult:
    status: Status
    objective: float | None
    bound: float
    choice: dict = field(default_factory=dict)  # model -> set type (gpu, tp), None: dedicated


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


def _us_up(seconds: float) -> int:
    return math.ceil(seconds * 1e6)


def _latency_fits(cs) -> bool:
    """S4 on candidates sharing one set, in rounded microseconds."""
    cs = list(cs)
    tpots = [c.tpot for c in cs if c.tpot is not None]
    return not tpots or sum(c.step for c in cs) <= min(tpots)


def _latency_rows(cm, here) -> None:
    """S4 in a CP-SAT bin: here = [(candidate, in-bin literal)]. For each member i:
    sum_j step_j x_j <= tpot_i + (sum of all steps) (1 - x_i). Left out where the steps of all
    candidates fit that TPOT anyway."""
    total = sum(c.step for c, _ in here)
    for c, v in here:
        if c.tpot is not None and total > c.tpot:
            cm.add(sum(d.step * u for d, u in here) <= c.tpot + total * (1 - v))


def candidates(problem: Problem, sharing: SharingModel) -> dict[str, list[Candidate]]:
    """Per model, the set types that could host it in some plan (least footprint within memory)."""
    out: dict[str, list[Candidate]] = {}
    for c in problem.configs:
        fp = sharing.footprint.get(c)
        budget = sharing.budget.get(c.gpu)
        if fp is None or budget is None or not can_serve_all(problem, c):
            continue
        low = min_memory_per_gpu(fp)
        if low > budget:
            continue
        rps = full_demand(problem, c.model)
        out.setdefault(c.model, []).append(Candidate(
            c.model, c.gpu, c.tp, time_fraction(problem, c, rps), memory_per_gpu(fp, rps, 1), low,
            _us_up(fp.step_s), None if math.isinf(fp.tpot_s) else math.floor(fp.tpot_s * 1e6)))
    return out


def _fits_one_set(problem: Problem, sharing: SharingModel, cand: Candidate) -> bool:
    return cand.f <= problem.max_utilization and cand.mem <= sharing.budget[cand.gpu] and _latency_fits([cand])


def _cp_solver(time_limit: float | None, params: ShareParams) -> cp_model.CpSolver:
    return cp_solver(None if time_limit is None else max(time_limit, FLOOR_S), params.workers, params.seed)


def _left(deadline: Deadline, share: float) -> float | None:
    """share of what is left, of at least FLOOR_S left (HiGHS calls)."""
    return deadline.left(share, floor=FLOOR_S * share)


def pooled(problem: Problem, sharing: SharingModel, cands: dict[str, list[Candidate]],
           dedicated: dict[str, float | None], for_bound: bool, time_limit: float | None,
           params: ShareParams, slack: float = 0.0, usage: dict | None = None):
    """Build and solve the pooled model (PuLP + HiGHS, exact coefficients). for_bound: every type that
    could host a model in some plan; else only types one set can host it on (primal). dedicated[m]:
    m's dedicated cost, None if it has none. slack (primal only) keeps that share of each type's memory
    free, room the aggregate leaves for packing whole models into sets. usage (primal with instance
    shapes, params.instances): m's dedicated replicas; then the objective is the node price of
    instances holding the sets and those replicas (node_milp's C6 per GPU type and TP degree)."""
    U = problem.max_utilization
    prob = pulp.LpProblem("gpumix_pooled", pulp.LpMinimize)
    mine = {m: [c for c in cands.get(m, []) if for_bound or _fits_one_set(problem, sharing, c)]
            for m in problem.models}
    z = {(m, (c.gpu, c.tp)): prob.add_variable(f"z_{i}_{j}", cat=pulp.LpBinary)
         for i, m in enumerate(problem.models) for j, c in enumerate(mine[m])}
    y = {m: prob.add_variable(f"y_{i}", cat=pulp.LpBinary)
         for i, m in enumerate(problem.models) if dedicated[m] is not None}
    types = sorted({s for (_, s) in z})
    N = {s: prob.add_variable(f"N_{i}", lowBound=0, cat=pulp.LpInteger) for i, s in enumerate(types)}
    if usage is not None and params.instances:
        prob += _node_cost(prob, problem, params.instances, types, N, y, usage), "cost"
    else:
        prob += (pulp.lpSum(dedicated[m] * y[m] for m in y)
                 + pulp.lpSum(problem.price[s[0]] * s[1] * N[s] for s in types)), "cost"
    for i, m in enumerate(problem.models):
        terms = [z[(m, (c.gpu, c.tp))] for c in mine[m]] + ([y[m]] if m in y else [])
        if not terms:
            return PooledResult(Status.INFEASIBLE, None, math.inf)
        prob += pulp.lpSum(terms) == 1, f"P1_one_{i}"
    by_type: dict[tuple, list[Candidate]] = {}
    for m in problem.models:
        for c in mine[m]:
            by_type.setdefault((c.gpu, c.tp), []).append(c)
    for i, (s, cs) in enumerate(sorted(by_type.items())):
        budget = sharing.budget[s[0]]
        prob += pulp.lpSum(c.f * z[(c.model, s)] for c in cs) <= U * N[s], f"P2_time_{i}"
        prob += pulp.lpSum(c.mem / budget * z[(c.model, s)] for c in cs) <= (1 - slack) * N[s], f"P3_memory_{i}"
        for j in range(1, SETS_PER_BIN_CUT + 1):
            big = [z[(c.model, s)] for c in cs if c.low > budget / (j + 1)]
            if len(big) > j:
                prob += pulp.lpSum(big) <= j * N[s], f"P4_large_{i}_{j}"
    for g in sorted({s[0] for s in types}):
        if problem.available.get(g) is not None:
            prob += pulp.lpSum(s[1] * N[s] for s in types if s[0] == g) <= problem.available[g], f"P5_avail_{g}"
    res = milp.solve(milp.MilpModel(prob, N, {}), time_limit, params.mip_gap * 0.1)
    if not res.status.has_plan:
        return PooledResult(res.status, None, res.bound)
    choice = {m: next((s for (mm, s), v in z.items() if mm == m and (v.varValue or 0) > 0.5), None)
              for m in problem.models}
    return PooledResult(res.status, res.objective, res.bound, choice)


def _node_cost(prob, problem: Problem, instances, types, N, y, usage):
    """Nodes z[o] per instance type covering the shared sets N and the dedicated plans y chosen:
    per GPU type g and TP degree t, sum_o t floor(G_o / t) z_o >= GPUs in TP groups of t or more."""
    z = {o: prob.add_variable(f"node_{j}", lowBound=0, upBound=o.available, cat=pulp.LpInteger)
         for j, o in enumerate(i for i in instances if i.available != 0)}
    gpus = sorted({s[0] for s in types} | {c.gpu for m in y for c in usage.get(m, {})})
    for g in gpus:
        sizes = {s[1] for s in types if s[0] == g} | {c.tp for m in y for c in usage.get(m, {}) if c.gpu == g}
        for t in sorted(sizes):
            prob += (pulp.lpSum(t * (o.gpus // t) * v for o, v in z.items() if o.gpu == g)
                     >= pulp.lpSum(s[1] * N[s] for s in types if s[0] == g and s[1] >= t)
                     + pulp.lpSum(sum(c.tp * k for c, k in usage.get(m, {}).items() if c.gpu == g and c.tp >= t)
                                  * y[m] for m in y)), f"P6_nodes_{milp.var_name(g)}_{t}"
    for key in sorted({o.key for o in z}):
        same = [v for o, v in z.items() if o.key == key]
        a = next(o.available for o in z if o.key == key)
        if a is not None and len(same) > 1:
            prob += pulp.lpSum(same) <= a, f"P7_avail_{milp.var_name(*key)}"
    return pulp.lpSum(o.price_per_hour * v for o, v in z.items())


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
            if lt + ft <= t_cap and lm + fm <= m_cap and _latency_fits([items[j] for j in bins[b]] + [items[i]]):
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
            _latency_rows(cm, [(items[i], x[(i, b)]) for i in mine])
            if b + 1 < K:
                cm.add(use[b] >= use[b + 1])
        for b, members in enumerate(bins):
            cm.add_hint(use[b], True)
            for i in members:
                if (i, b) in x:
                    cm.add_hint(x[(i, b)], True)
        cm.minimize(sum(use))
        solver = _cp_solver(time_limit, params)
        if cp_status(solver.solve(cm)).has_plan and solver.objective_value < K:
            bins = [[i for i in range(len(items)) if (i, b) in x and solver.value(x[(i, b)])] for b in range(K)]
            bins = [b for b in bins if b]
    return [tuple(sorted(items[i].model for i in b)) for b in bins]


def solve_shared(problem: Problem, sharing: SharingModel, params: ShareParams = ShareParams()) -> ShareSolution:
    t0 = time.perf_counter()
    deadline = Deadline.start(params.time_limit)
    say = params.progress or (lambda _m: None)

    # Each model alone on dedicated replicas (availability relaxed to each model's own): D_m and LB_m.
    per_model: dict[str, milp.MilpResult] = {}
    for i, m in enumerate(problem.models):
        budget = deadline.left(PER_MODEL_SHARE / (len(problem.models) - i), floor=FLOOR_S)
        per_model[m] = milp.run(problem.restrict(models={m}), budget, mip_gap=params.mip_gap * 0.1)
    dedicated = {m: r.objective for m, r in per_model.items()}
    lower = {m: (r.bound if r.status != Status.INFEASIBLE else None) for m, r in per_model.items()}
    cands = candidates(problem, sharing)
    unshareable = {m: sharing.why_not.get(m, "fits no shared set") for m in problem.models if m not in cands}
    say(f"dedicated per model: ${sum(v for v in dedicated.values() if v):,.2f}/h; "
        f"{len(cands)}/{len(problem.models)} models can share")

    for_bound = pooled(problem, sharing, cands, lower, True, _left(deadline, BOUND_SHARE), params)
    bound, b_choice = for_bound.bound, for_bound.choice
    if for_bound.status == Status.INFEASIBLE:
        raise InfeasibleError("no plan, even with shared GPUs: some model fits no dedicated replica and no "
                              "shared set within availability")
    stats = {"models": len(problem.models), "shareable": len(cands), "bound_model": for_bound.status.value}
    best, choice = None, {}
    for slack in PACKING_SLACK:  # the pooled primal with some memory kept free, then packed
        if best is not None and best.cost <= bound * (1 + params.mip_gap) + 1e-9:
            break
        primal = pooled(problem, sharing, cands, dedicated, False, _left(deadline, PRIMAL_SHARE), params, slack,
                        {m: r.replicas for m, r in per_model.items()})
        if not primal.status.has_plan:
            continue
        pick = primal.choice
        choice = choice or pick
        sets = _pack_assignment(problem, sharing, cands, pick, params, deadline)
        got = _realize(problem, per_model, sets, [m for m, s in pick.items() if s is None], params, deadline)
        got = got and _ride(problem, sharing, cands, got, params, deadline)
        if got is not None and (best is None or got.cost < best.cost - 1e-9):
            best, choice = got, pick
    if best is None or best.cost > bound * (1 + params.mip_gap) + 1e-9:
        # the pooled assignment packs into more sets than it counted: pack every model at once
        types = sorted({s for s in list(choice.values()) + list(b_choice.values()) if s is not None})
        start = [st for st in best.sets if st.count == 1] if best is not None else []
        found = bins_model(problem, sharing, cands, per_model, types, start, bound,
                           deadline.left(BINS_SHARE, cap=params.bins_time_limit, floor=FLOOR_S), params)
        stats["bins_model"] = found is not None
        if found is not None:
            again = _realize(problem, per_model, *found, params, deadline)
            again = again and _ride(problem, sharing, cands, again, params, deadline)
            if again is not None and (best is None or again.cost < best.cost - 1e-9):
                best = again
    dedicated_only = _dedicated_only(problem, per_model, params, deadline)
    if dedicated_only is not None and (best is None or dedicated_only.cost <= best.cost):
        best = dedicated_only
    if best is None:
        raise NoSolutionError("no plan with shared GPUs within the time limit; raise --time-limit")
    cost, replicas, routes, sets = best.cost, best.replicas, best.routes, best.sets
    bound = min(bound, cost)
    cert = certify(cost, bound, proven=best.optimal, mip_gap=params.mip_gap)
    wall = time.perf_counter() - t0
    stats.update({"shared_sets": sum(s.count for s in sets), "shared_models": sum(len(s.models) for s in sets)})
    say(f"{cert.status}: ${cost:,.2f}/h with {stats['shared_sets']} shared sets, bound ${bound:,.2f}/h, "
        f"gap {cert.gap:.4%}, {wall:.2f}s")
    return ShareSolution(cert.status, cost, bound, dict(sorted(replicas.items())), routes, wall, "shared", stats,
                         shared=tuple(sets), dedicated_only_cost=None if dedicated_only is None else dedicated_only.cost,
                         unshareable=unshareable)


def _pack_assignment(problem, sharing, cands, choice, params, deadline: Deadline) -> list[SharedSet]:
    by_type: dict[tuple, list[Candidate]] = {}
    for m, s in choice.items():
        if s is not None:
            by_type.setdefault(s, []).append(next(c for c in cands[m] if (c.gpu, c.tp) == s))
    return [SharedSet(g, t, 1, models) for (g, t), cs in sorted(by_type.items())
            for models in pack(problem, sharing, g, t, cs,
                               deadline.left(PACK_SHARE, cap=PACK_TIME_S, floor=FLOOR_S), params)]


def _realize(problem, per_model, sets, ded, params, deadline: Deadline) -> SharePlan | None:
    """Plan the dedicated models beside the sets, or None when availability leaves them no plan."""
    used: dict[str, int] = {}
    for s in sets:
        used[s.gpu] = used.get(s.gpu, 0) + s.tp * s.count
    if any(problem.available.get(g) is not None and n > problem.available[g] for g, n in used.items()):
        return None
    if not ded:
        return SharePlan(_total(problem, {}, sets, params, deadline), {}, {}, True, sets)
    if all(a is None for a in problem.available.values()):
        if any(per_model[m].objective is None for m in ded):
            return None
        replicas = {c: k for m in ded for c, k in per_model[m].replicas.items()}
        routes = {key: v for m in ded for key, v in per_model[m].routes.items()}
        optimal = all(per_model[m].status == Status.OPTIMAL for m in ded)
    else:
        rest = {g: None if a is None else a - used.get(g, 0) for g, a in problem.available.items()}
        try:
            sol = solve_dedicated(problem.restrict(models=set(ded), available=rest),
                                  SolveParams(_left(deadline, REALIZE_SHARE), params.mip_gap))
        except (InfeasibleError, NoSolutionError):
            return None
        replicas, routes, optimal = sol.replicas, sol.routes, sol.status == Status.OPTIMAL
    return SharePlan(_total(problem, replicas, sets, params, deadline), replicas, routes, optimal, sets)


def _ride(problem, sharing, cands, plan: SharePlan, params, deadline: Deadline) -> SharePlan:
    """Riders: a dedicated model m on k replicas of one config (m, g, t) that serves all its buckets
    becomes a shared group of k sets of (g, t) hosting m and riders that fit what m leaves of them:
    time sum f <= k U, memory per GPU sum memory_per_gpu(.., k) <= B (m's too), loads rounded up and
    capacities down. A rider is every model of one single set (of any type: only an emptied set
    saves) or a dedicated model with all its replicas, each model with a candidate on (g, t). Which
    move is a knapsack worth the sets' and replicas' price (CP-SAT, hinted with the greedy by price
    then size, which is the fallback). The group takes the GPUs of m's replicas, so availability
    holds. Hosts in name order; a change is kept only if the plan's cost (_total) goes down.
    Returns the plan, changed or not."""
    cost, replicas, routes, optimal, sets = plan.cost, plan.replicas, plan.routes, plan.optimal, plan.sets
    U = problem.max_utilization
    on = {(m, c.gpu, c.tp): c for m, cs in cands.items() for c in cs}
    for m in sorted({c.model for c, k in replicas.items() if k > 0}):
        mine = [(c, k) for c, k in replicas.items() if c.model == m and k > 0]
        if len(mine) != 1:  # a rider by now, or on several configs
            continue
        host, k = mine[0]
        g, t = host.gpu, host.tp
        fp, budget = sharing.footprint.get(host), sharing.budget.get(g)
        if fp is None or budget is None or not can_serve_all(problem, host):
            continue
        rps = full_demand(problem, m)
        free_t = math.floor(k * U * TIME_SCALE) - math.ceil(time_fraction(problem, host, rps) * TIME_SCALE)
        free_m = math.floor(budget / MEM_UNIT) - math.ceil(memory_per_gpu(fp, rps, k) / MEM_UNIT)
        if free_t <= 0 or free_m <= 0:
            continue

        me = Candidate(m, g, t, 0.0, 0.0, 0.0, _us_up(fp.step_s),
                       None if math.isinf(fp.tpot_s) else math.floor(fp.tpot_s * 1e6))  # S4 of the host
        free_l = None if me.tpot is None else me.tpot - me.step

        def load(models):
            if not all((r, g, t) in on for r in models):
                return None
            return (sum(math.ceil(on[(r, g, t)].f * TIME_SCALE) for r in models),
                    sum(math.ceil(memory_per_gpu(sharing.footprint[Config(r, g, t)], full_demand(problem, r), k)
                                  / MEM_UNIT) for r in models),
                    sum(on[(r, g, t)].step for r in models))

        pool = []  # (key, time, memory, price): ("set", index) or ("dedicated", model)
        for i, st in enumerate(sets):
            if st.count == 1:
                pool.append((("set", i), load(st.models), problem.price[st.gpu] * st.tp))
        for r in sorted({c.model for c, v in replicas.items() if v > 0} - {m}):
            pool.append((("dedicated", r), load((r,)),
                         sum(problem.config_cost(c) * v for c, v in replicas.items() if c.model == r)))
        caps = (free_t, free_m, free_l if free_l is not None else 1 << 60)
        pool = [(key, w, price) for key, w, price in pool if w is not None and all(a <= b for a, b in zip(w, caps))]
        take = _knapsack(pool, caps, params, deadline)
        if not take:
            continue
        gone = {i for kind, i in take if kind == "set"}
        riders = {r for kind, r in take if kind == "dedicated"}
        if not _latency_fits([on[(r, g, t)] for r in riders | {r for i in gone for r in sets[i].models}] + [me]):
            continue  # a rider's own TPOT is tighter than the host's: this host takes none
        new_sets = [st for i, st in enumerate(sets) if i not in gone] + [
            SharedSet(g, t, k, (m,) + tuple(sorted(riders | {r for i in gone for r in sets[i].models})))]
        new_replicas = {c: v for c, v in replicas.items() if c.model != m and c.model not in riders}
        new_routes = {key: v for key, v in routes.items() if key[0].model != m and key[0].model not in riders}
        new_cost = _total(problem, new_replicas, new_sets, params, deadline)
        if new_cost < cost - 1e-9:
            cost, replicas, routes, sets = new_cost, new_replicas, new_routes, new_sets
    return SharePlan(cost, replicas, routes, optimal, sets)


def _knapsack(pool, caps, params, deadline: Deadline) -> set:
    """The keys of `pool` [(key, weights, price)] worth most with every weight sum within its cap
    (caps: time, memory, latency; all positive)."""
    order = sorted(pool, key=lambda p: (-p[2], -max(w / c for w, c in zip(p[1], caps)), p[0]))
    greedy, used = set(), [0] * len(caps)
    for key, w, _ in order:
        if all(u + a <= c for u, a, c in zip(used, w, caps)):
            greedy.add(key)
            used = [u + a for u, a in zip(used, w)]
    if len(greedy) == len(pool):
        return greedy
    cm = cp_model.CpModel()
    x = [cm.new_bool_var(f"x_{j}") for j in range(len(pool))]
    for d, cap in enumerate(caps):
        cm.add(sum(p[1][d] * v for p, v in zip(pool, x)) <= cap)
    for p, v in zip(pool, x):
        cm.add_hint(v, p[0] in greedy)
    cm.maximize(sum(math.ceil(p[2] * COST_SCALE) * v for p, v in zip(pool, x)))
    solver = _cp_solver(deadline.left(KNAPSACK_SHARE, cap=PACK_TIME_S, floor=FLOOR_S), params)
    if cp_status(solver.solve(cm)).has_plan:
        chosen = {p[0] for p, v in zip(pool, x) if solver.value(v)}
        if sum(p[2] for p in pool if p[0] in chosen) > sum(p[2] for p in pool if p[0] in greedy) + 1e-9:
            return chosen
    return greedy


class _StopAtBound(cp_model.CpSolverSolutionCallback):
    """Stop as soon as a solution is within the gap of the pooled bound (CP-SAT cannot see it)."""

    def __init__(self, target: float):
        super().__init__()
        self.target = target

    def on_solution_callback(self):
        if self.objective_value <= self.target:
            self.stop_search()


def bins_model(problem, sharing, cands, per_model, types, start, bound, time_limit, params):
    """Every model at once into single sets of `types` or onto its dedicated plan (CP-SAT):
      x[m,s,b] model m on set b of type s;  o[s,b] set open;  y[m] dedicated
      sum x + y = 1;  per set: sum f x <= U o, sum mem x <= B o (rounded up / down);  o[s,b] >= o[s,b+1];
      availability over open sets and the dedicated plans' GPUs;  min sum p t o + sum D_m y.
    Sets of a type are interchangeable, so the i-th model of a type only uses its first i+1 sets.
    Returns (sets, dedicated models) or None."""
    U = problem.max_utilization
    cm = cp_model.CpModel()
    on_type: dict[tuple, list[Candidate]] = {s: [] for s in types}
    for m in problem.models:
        for c in cands.get(m, []):
            if (c.gpu, c.tp) in on_type and _fits_one_set(problem, sharing, c):
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
        for b in range(K):
            here = [(c, x[(c.model, s, b)]) for c in cs if (c.model, s, b) in x]
            cm.add(sum(math.ceil(c.f * TIME_SCALE) * v for c, v in here) <= t_cap * opened[(s, b)])
            cm.add(sum(math.ceil(c.mem / MEM_UNIT) * v for c, v in here) <= m_cap * opened[(s, b)])
            _latency_rows(cm, here)
    y = {}
    for i, m in enumerate(problem.models):
        terms = [v for (mm, _, _), v in x.items() if mm == m]
        if per_model[m].objective is not None:
            y[m] = cm.new_bool_var(f"y_{i}")
            cost.append((math.ceil(per_model[m].objective * COST_SCALE), y[m]))
            terms.append(y[m])
        if not terms:
            return None
        cm.add_exactly_one(terms)
    for g in sorted({s[0] for s in types}):
        if problem.available.get(g) is not None:
            ded_use = [(sum(c.tp * k for c, k in per_model[m].replicas.items() if c.gpu == g), v) for m, v in y.items()]
            cm.add(sum(s[1] * v for (s, _), v in opened.items() if s[0] == g)
                   + sum(u * v for u, v in ded_use if u) <= problem.available[g])
    cm.minimize(sum(w * v for w, v in cost))
    placed = {m for st in start for m in st.models}
    seen: dict[tuple, int] = {}
    for st in start:  # the hint: the packed pooled solution, sets renumbered per type
        s = (st.gpu, st.tp)
        b = seen.get(s, 0)
        seen[s] = b + 1
        if (s, b) in opened:
            cm.add_hint(opened[(s, b)], True)
        for m in st.models:
            if (m, s, b) in x:
                cm.add_hint(x[(m, s, b)], True)
    for m, v in y.items():
        cm.add_hint(v, m not in placed)
    solver = _cp_solver(time_limit, params)
    status = cp_status(solver.solve(cm, _StopAtBound(bound * (1 + params.mip_gap) * COST_SCALE)))
    if not status.has_plan:
        return None
    sets = []
    for (s, b), v in sorted(opened.items()):
        models = tuple(sorted(m for (m, ss, bb), xv in x.items() if ss == s and bb == b and solver.value(xv)))
        if models:
            sets.append(SharedSet(s[0], s[1], 1, models))
    return sets, [m for m, v in y.items() if solver.value(v)]


def _dedicated_only(problem, per_model, params, deadline: Deadline) -> SharePlan | None:
    if all(a is None for a in problem.available.values()):
        if any(r.objective is None for r in per_model.values()):
            return None
        replicas = {c: k for r in per_model.values() for c, k in r.replicas.items()}
        routes = {key: v for r in per_model.values() for key, v in r.routes.items()}
        return SharePlan(_total(problem, replicas, [], params, deadline), replicas, routes,
                         all(r.status == Status.OPTIMAL for r in per_model.values()))
    try:
        sol = solve_dedicated(problem, SolveParams(_left(deadline, DEDICATED_SHARE), params.mip_gap))
    except (InfeasibleError, NoSolutionError):
        return None
    return SharePlan(_total(problem, sol.replicas, [], params, deadline), sol.replicas, sol.routes,
                     sol.status == Status.OPTIMAL)


def _total(problem: Problem, replicas: dict[Config, int], sets: list[SharedSet], params: ShareParams,
           deadline: Deadline) -> float:
    """The plan's $/hour: per GPU, or with instance shapes the nodes stage 2 packs it onto."""
    if params.instances:
        need = {(c, False): k for c, k in replicas.items()}
        for i, st in enumerate(sets):
            need[(SetItem(i, st.gpu, st.tp), False)] = st.count
        limit = deadline.left(cap=PACK_TIME_S, floor=FLOOR_S)
        pk = stage2.pack(need, params.instances, params=CpParams(limit, params.workers, params.seed))
        return pk.cost if pk.status.has_plan else math.inf
    return (sum(problem.config_cost(c) * k for c, k in replicas.items())
            + sum(problem.price[s.gpu] * s.tp * s.count for s in sets))
