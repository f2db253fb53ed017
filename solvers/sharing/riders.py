"""Riders (`gpumix plan --share-gpus`): a dedicated model's replicas become shared sets that carry
other models in their spare time and memory.

A dedicated model m on k replicas of one config (g, t) that serves all its buckets becomes a group of
k sets of (g, t) hosting m and the models of whole single sets or whole dedicated plans that fit its
spare time and memory (count k: KV at 1/k of the load), when that lowers the cost; the group uses
the replicas' GPUs, so availability holds. Which riders move is a knapsack (CP-SAT, hinted with the
greedy by price then size).
"""
from __future__ import annotations

import math

from ortools.sat.python import cp_model

from gpumix.planner.problem import Config
from gpumix.planner.sharing import SharedSet, can_serve_all, full_demand, memory_per_gpu, time_fraction
from gpumix.solvers.cpsat import cp_status
from gpumix.solvers.result import Deadline
from gpumix.solvers.sharing.packing import (MEM_UNIT, PACK_TIME_S, TIME_SCALE, COST_SCALE, FLOOR_S, Candidate,
                                            SharePlan, latency_fits, plan_cost, share_cp_solver, us_up)

KNAPSACK_SHARE = 0.05  # of what is left, for one rider knapsack (at most PACK_TIME_S)


def ride(problem, sharing, cands, plan: SharePlan, params, deadline: Deadline) -> SharePlan:
    """Riders: a dedicated model m on k replicas of one config (m, g, t) that serves all its buckets
    becomes a shared group of k sets of (g, t) hosting m and riders that fit what m leaves of them:
    time sum f <= k U, memory per GPU sum memory_per_gpu(.., k) <= B (m's too), loads rounded up and
    capacities down. A rider is every model of one single set (of any type: only an emptied set
    saves) or a dedicated model with all its replicas, each model with a candidate on (g, t). Which
    move is a knapsack worth the sets' and replicas' price (CP-SAT, hinted with the greedy by price
    then size, which is the fallback). The group takes the GPUs of m's replicas, so availability
    holds. Hosts in name order; a change is kept only if the plan's cost (plan_cost) goes down.
    Returns the plan, changed or not."""
    cost, replicas, routes, optimal, sets = plan.cost, plan.replicas, plan.routes, plan.optimal, plan.sets
    on = {(m, c.gpu, c.tp): c for m, cs in cands.items() for c in cs}
    for m in sorted({c.model for c, k in replicas.items() if k > 0}):
        mine = [(c, k) for c, k in replicas.items() if c.model == m and k > 0]
        if len(mine) != 1:  # a rider by now, or on several configs
            continue
        host, k = mine[0]
        g, t = host.gpu, host.tp
        room = _room(problem, sharing, host, k)
        if room is None:
            continue
        caps, me = room
        take = knapsack(_pool(problem, sharing, on, host, k, sets, replicas, caps), caps, params, deadline)
        if not take:
            continue
        gone = {i for kind, i in take if kind == "set"}
        riders = {r for kind, r in take if kind == "dedicated"}
        if not latency_fits([on[(r, g, t)] for r in riders | {r for i in gone for r in sets[i].models}] + [me]):
            continue  # a rider's own TPOT is tighter than the host's: this host takes none
        new_sets = [st for i, st in enumerate(sets) if i not in gone] + [
            SharedSet(g, t, k, (m,) + tuple(sorted(riders | {r for i in gone for r in sets[i].models})))]
        new_replicas = {c: v for c, v in replicas.items() if c.model != m and c.model not in riders}
        new_routes = {key: v for key, v in routes.items() if key[0].model != m and key[0].model not in riders}
        new_cost = plan_cost(problem, new_replicas, new_sets, params, deadline)
        if new_cost < cost - 1e-9:
            cost, replicas, routes, sets = new_cost, new_replicas, new_routes, new_sets
    return SharePlan(cost, replicas, routes, optimal, sets)


def _room(problem, sharing, host: Config, k: int):
    """What the host model leaves of its k sets: ((time, memory, latency) caps in scaled units, the
    host as a Candidate for S4), or None when it leaves nothing or cannot host."""
    g = host.gpu
    fp, budget = sharing.footprint.get(host), sharing.budget.get(g)
    if fp is None or budget is None or not can_serve_all(problem, host):
        return None
    rps = full_demand(problem, host.model)
    free_t = math.floor(k * problem.max_utilization * TIME_SCALE) - \
        math.ceil(time_fraction(problem, host, rps) * TIME_SCALE)
    free_m = math.floor(budget / MEM_UNIT) - math.ceil(memory_per_gpu(fp, rps, k) / MEM_UNIT)
    if free_t <= 0 or free_m <= 0:
        return None
    me = Candidate(host.model, g, host.tp, 0.0, 0.0, 0.0, us_up(fp.step_s),
                   None if math.isinf(fp.tpot_s) else math.floor(fp.tpot_s * 1e6))  # S4 of the host
    free_l = None if me.tpot is None else me.tpot - me.step
    return (free_t, free_m, free_l if free_l is not None else 1 << 60), me


def _pool(problem, sharing, on: dict, host: Config, k: int, sets, replicas, caps) -> list:
    """The moves that fit the host's room: (key, (time, memory, step), price) with key ("set", index)
    for a single set's models, or ("dedicated", model) for a dedicated model with all its replicas."""
    g, t = host.gpu, host.tp

    def load(models):
        if not all((r, g, t) in on for r in models):
            return None
        return (sum(math.ceil(on[(r, g, t)].f * TIME_SCALE) for r in models),
                sum(math.ceil(memory_per_gpu(sharing.footprint[sharing.config(r, g, t)], full_demand(problem, r), k)
                              / MEM_UNIT) for r in models),
                sum(on[(r, g, t)].step for r in models))

    pool = []
    for i, st in enumerate(sets):
        if st.count == 1:
            pool.append((("set", i), load(st.models), problem.price[st.gpu] * st.tp))
    for r in sorted({c.model for c, v in replicas.items() if v > 0} - {host.model}):
        pool.append((("dedicated", r), load((r,)),
                     sum(problem.config_cost(c) * v for c, v in replicas.items() if c.model == r)))
    return [(key, w, price) for key, w, price in pool if w is not None and all(a <= b for a, b in zip(w, caps))]


def knapsack(pool, caps, params, deadline: Deadline) -> set:
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
    solver = share_cp_solver(deadline.left(KNAPSACK_SHARE, cap=PACK_TIME_S, floor=FLOOR_S), params)
    if cp_status(solver.solve(cm)).has_plan:
        chosen = {p[0] for p, v in zip(pool, x) if solver.value(v)}
        if sum(p[2] for p in pool if p[0] in chosen) > sum(p[2] for p in pool if p[0] in greedy) + 1e-9:
            return chosen
    return greedy
