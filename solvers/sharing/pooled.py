"""Stage 1 with shared GPU sets (`gpumix plan --share-gpus`): which models co-locate, on what.

A model is served either by dedicated replica groups (solvers/stage1) or wholly by one shared
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
HiGHS itself, solvers/highs.py) is a lower bound on every plan with sharing.

Primal: the same model with D_m (m's dedicated optimum) and only types one set can host m on
(f <= U, mem <= B, its own step within its TPOT); packing into sets and riders also keep S4; the
models it shares on each type are packed into single sets (sharing/packing.py: first fit decreasing,
then CP-SAT bin packing with P2, P3 per set, loads rounded up and capacities down), the dedicated ones
re-solved by stage 1 under what the sets leave of availability. Then riders (sharing/riders.py): a
dedicated model on k replicas of one config
(g, t) that serves all its buckets becomes a group of k sets of (g, t) hosting it and the models of
whole single sets or whole dedicated plans that fit its spare time and memory (count k: KV at 1/k
of the load), when that lowers the cost; the group uses the replicas' GPUs, so availability holds.
If the result is not cheaper than the dedicated-only plan, that plan is kept. So the primal builds
single-set groups and groups of k sets around one dedicated model's k replicas, no other groups.
With instance shapes (ShareParams.instances) the primal prices nodes, not GPUs: the pooled primal
buys instances covering its sets and the dedicated models' replicas (P6, node_milp's C6), and every
candidate plan is costed by packing it onto instances (solvers/stage2/packing.py). The bound is unchanged:
a node of G GPUs costs at least G times its type's cheapest $/GPU-hour, which the problem's prices are.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pulp

from gpumix.planner.errors import InfeasibleError, NoSolutionError
from gpumix.planner.problem import Problem
from gpumix.planner.sharing import SharedSet, SharingModel, can_serve_all, full_demand, memory_per_gpu, \
    min_memory_per_gpu, time_fraction
from gpumix.solvers.result import INNER_GAP, Deadline, Status, certify
from gpumix.solvers.sharing import riders
from gpumix.solvers.sharing.packing import (FLOOR_S, Candidate, SharePlan, bins_model, fits_one_set,
                                            pack_assignment, plan_cost, us_up)
from gpumix.solvers.stage1 import milp
from gpumix.solvers.stage1.decompose import Progress, Solution, SolveParams, solve as solve_dedicated

SETS_PER_BIN_CUT = 3  # P4 for j = 1..3
PACKING_SLACK = (0.0, 0.01, 0.03, 0.06)  # primal attempts: share of set memory the pooled model keeps free

# Time: shares of what is left when a step starts
PER_MODEL_SHARE = 0.3  # the dedicated per-model MILPs, all together
BOUND_SHARE = 0.5  # the pooled model for the bound
PRIMAL_SHARE = 0.3  # one pooled primal (per PACKING_SLACK attempt)
BINS_SHARE = 0.5  # bins_model (at most ShareParams.bins_time_limit)
REALIZE_SHARE = 0.8  # the dedicated models beside the sets, under availability
DEDICATED_SHARE = 0.9  # the dedicated-only plan, under availability

__all__ = ["Candidate", "PooledResult", "ShareParams", "SharePlan", "ShareSolution", "candidates", "pooled",
           "solve_shared"]


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
            us_up(fp.step_s), None if math.isinf(fp.tpot_s) else math.floor(fp.tpot_s * 1e6)))
    return out


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
    mine = {m: [c for c in cands.get(m, []) if for_bound or fits_one_set(problem, sharing, c)]
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
    res = milp.solve(milp.MilpModel(prob, N, {}), time_limit, params.mip_gap * INNER_GAP)
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


def solve_shared(problem: Problem, sharing: SharingModel, params: ShareParams = ShareParams()) -> ShareSolution:
    """Dedicated per model -> pooled bound -> pooled primal, packed, with riders -> every model at
    once (bins_model) while the gap is open -> the dedicated-only plan when it is no dearer."""
    t0 = time.perf_counter()
    deadline = Deadline.start(params.time_limit)
    say = params.progress or (lambda _m: None)

    # Each model alone on dedicated replicas (availability relaxed to each model's own): D_m and LB_m.
    per_model: dict[str, milp.MilpResult] = {}
    for i, m in enumerate(problem.models):
        budget = deadline.left(PER_MODEL_SHARE / (len(problem.models) - i), floor=FLOOR_S)
        per_model[m] = milp.run(problem.restrict(models={m}), budget, mip_gap=params.mip_gap * INNER_GAP)
    dedicated = {m: r.objective for m, r in per_model.items()}
    lower = {m: (r.bound if r.status != Status.INFEASIBLE else None) for m, r in per_model.items()}
    cands = candidates(problem, sharing)
    unshareable = {m: sharing.why_not.get(m, "fits no shared set") for m in problem.models if m not in cands}
    say(f"dedicated per model: ${sum(v for v in dedicated.values() if v):,.2f}/h; "
        f"{len(cands)}/{len(problem.models)} models can share")

    say("pooled bound model ...")
    for_bound = pooled(problem, sharing, cands, lower, True, _left(deadline, BOUND_SHARE), params)
    bound = for_bound.bound
    say(f"bound ${bound:,.2f}/h ({for_bound.status.value}); packing the shared sets ...")
    if for_bound.status == Status.INFEASIBLE:
        raise InfeasibleError("no plan, even with shared GPUs: some model fits no dedicated replica and no "
                              "shared set within availability")
    stats = {"models": len(problem.models), "shareable": len(cands), "bound_model": for_bound.status.value}
    best, tried = _primal(problem, sharing, cands, per_model, bound, params, deadline)
    if best is None or best.cost > bound * (1 + params.mip_gap) + 1e-9:
        # the pooled assignment packs into more sets than it counted: pack every model at once, over
        # every set type any pooled solution chose (near-ties between set types fall by input order)
        types = sorted({s for pick in tried + [for_bound.choice] for s in pick.values() if s is not None})
        say(f"best so far {'none' if best is None else f'${best.cost:,.2f}/h'}; packing every model at once ...")
        again = _all_at_once(problem, sharing, cands, per_model, best, types, bound, params, deadline, stats)
        if again is not None and (best is None or again.cost < best.cost - 1e-9):
            best = again
    say(f"best ${best.cost:,.2f}/h; the dedicated-only plan for comparison ..." if best is not None
        else "the dedicated-only plan ...")
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


def _primal(problem, sharing, cands, per_model, bound, params, deadline: Deadline) -> tuple[SharePlan | None, list]:
    """The pooled primal with some memory kept free (PACKING_SLACK), packed into sets, the dedicated
    models planned beside them, riders: the best plan and every assignment tried."""
    dedicated = {m: r.objective for m, r in per_model.items()}
    best, tried = None, []
    for slack in PACKING_SLACK:
        if best is not None and best.cost <= bound * (1 + params.mip_gap) + 1e-9:
            break
        primal = pooled(problem, sharing, cands, dedicated, False, _left(deadline, PRIMAL_SHARE), params, slack,
                        {m: r.replicas for m, r in per_model.items()})
        if not primal.status.has_plan:
            continue
        pick = primal.choice
        tried.append(pick)
        sets = pack_assignment(problem, sharing, cands, pick, params, deadline)
        got = _realize(problem, per_model, sets, [m for m, s in pick.items() if s is None], params, deadline)
        got = got and riders.ride(problem, sharing, cands, got, params, deadline)
        if got is not None and (best is None or got.cost < best.cost - 1e-9):
            best = got
    return best, tried


def _all_at_once(problem, sharing, cands, per_model, best, types, bound, params, deadline: Deadline,
                 stats: dict) -> SharePlan | None:
    """bins_model from the best plan's single sets, the dedicated models beside, riders."""
    start = [st for st in best.sets if st.count == 1] if best is not None else []
    found = bins_model(problem, sharing, cands, per_model, types, start, bound,
                       deadline.left(BINS_SHARE, cap=params.bins_time_limit, floor=FLOOR_S), params)
    stats["bins_model"] = found is not None
    if found is None:
        return None
    again = _realize(problem, per_model, found.sets, found.dedicated, params, deadline)
    return again and riders.ride(problem, sharing, cands, again, params, deadline)


def _realize(problem, per_model, sets, ded, params, deadline: Deadline) -> SharePlan | None:
    """Plan the dedicated models beside the sets, or None when availability leaves them no plan."""
    used: dict[str, int] = {}
    for s in sets:
        used[s.gpu] = used.get(s.gpu, 0) + s.tp * s.count
    if any(problem.available.get(g) is not None and n > problem.available[g] for g, n in used.items()):
        return None
    if not ded:
        return SharePlan(plan_cost(problem, {}, sets, params, deadline), {}, {}, True, sets)
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
    return SharePlan(plan_cost(problem, replicas, sets, params, deadline), replicas, routes, optimal, sets)


def _dedicated_only(problem, per_model, params, deadline: Deadline) -> SharePlan | None:
    if all(a is None for a in problem.available.values()):
        if any(r.objective is None for r in per_model.values()):
            return None
        replicas = {c: k for r in per_model.values() for c, k in r.replicas.items()}
        routes = {key: v for r in per_model.values() for key, v in r.routes.items()}
        return SharePlan(plan_cost(problem, replicas, [], params, deadline), replicas, routes,
                         all(r.status == Status.OPTIMAL for r in per_model.values()))
    try:
        sol = solve_dedicated(problem, SolveParams(_left(deadline, DEDICATED_SHARE), params.mip_gap))
    except (InfeasibleError, NoSolutionError):
        return None
    return SharePlan(plan_cost(problem, sol.replicas, [], params, deadline), sol.replicas, sol.routes,
                     sol.status == Status.OPTIMAL)
