"""The whole instance problem as one CP-SAT model: sizing, routing and placement together.

For small problems only: the cross-check of the two-stage result (tests) and a last resort when the
stages leave a gap (solvers/stage2/placement.py).

Sets        node slots s (offers o = instance type, on-demand; up to min(available, replicas that fit));
            configs c; buckets k of each model
Variables   open[s] in {0,1}; r[s,c] in Z+; y[c,k] in 0..S: bucket k's demand in units of d[m,k]/S
Objective   min sum_s P[s] open[s]                                   (P = price in 1e-5 $/h)
C1_demand   sum_c y[c,k] = S
C2_capacity sum_k a[c,k] y[c,k] <= floor(U W) sum_s r[s,c],  a[c,k] = ceil(W d[m,k] / (S mu[c,k]))
C3_avail    open slots per instance type <= available
C3_gpus     GPUs of the open slots of GPU type g <= A[g] (a cap in the workload's `gpus`)
C4_fill     sum_c tp r[s,c] <= G[s] open[s]
Scaling is conservative (load rounded up, capacity down: W = 1e6, S = 1000 by default), so every
solution is a valid plan; the model is a restriction (routing in steps of 1/S), so its optimum can
only be above the true one and its bound is not reported as a bound on the true problem.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from gpumix.planner.problem import Problem
from gpumix.solvers.cpsat import CpParams, cp_status
from gpumix.solvers.result import Status
from gpumix.solvers.stage2.packing import SCALE, Node, Placed, scaled


@dataclass(frozen=True)
class MonoResult:
    status: Status
    cost: float
    bound: float  # of the restricted model
    nodes: tuple[Node, ...] = ()
    replicas: dict = field(default_factory=dict)
    routes: dict = field(default_factory=dict)
    slots: int = 0
    wall_s: float = 0.0


def slot_plan(problem: Problem, instances, cap_per_offer: int = 64) -> list:
    slots = []
    for inst in instances:
        if inst.available == 0:
            continue
        on = [c for c in problem.configs if c.gpu == inst.gpu and c.tp <= inst.gpus]
        if not on:
            continue
        ub = cap_per_offer if inst.available is None else min(inst.available, cap_per_offer)
        # no optimal plan runs more replicas of c than all of c's buckets need, nor an empty node
        need = sum(math.ceil(sum(problem.demand[(c.model, k)] / mu for k, mu in problem.capacity[c].items())
                             / problem.max_utilization) for c in on)
        slots += [inst] * min(ub, max(need, 1))
    return slots


def solve(problem: Problem, instances, params: CpParams = CpParams(), shares: int = 1000,
          weight: int = 1_000_000, hint=None) -> MonoResult:
    t0 = time.perf_counter()
    slots = slot_plan(problem, instances)
    m = cp_model.CpModel()
    opened = [m.new_bool_var(f"open_{s}") for s in range(len(slots))]
    r = {}
    for s, inst in enumerate(slots):
        fill = []
        for c in problem.configs:
            if c.gpu == inst.gpu and c.tp <= inst.gpus:
                r[s, c] = m.new_int_var(0, inst.gpus // c.tp, f"r_{s}_{c}")
                fill.append(c.tp * r[s, c])
        m.add(sum(fill) <= inst.gpus * opened[s])  # C4_fill
    y = {(c, k): m.new_int_var(0, shares, f"y_{c}_{k}") for c in problem.configs for k in problem.capacity[c]}
    for mname in problem.models:
        for k in problem.buckets[mname]:
            m.add(sum(v for (c, kk), v in y.items() if c.model == mname and kk == k) == shares)  # C1
    cap = math.floor(problem.max_utilization * weight)
    for c in problem.configs:
        load = [math.ceil(weight * problem.demand[(c.model, k)] / (shares * mu)) * y[c, k]
                for k, mu in problem.capacity[c].items()]
        m.add(sum(load) <= cap * sum(r[s, cc] for (s, cc) in r if cc == c))  # C2
    for key in sorted({i.key for i in slots}):
        ss = [s for s, i in enumerate(slots) if i.key == key]
        if slots[ss[0]].available is not None:
            m.add(sum(opened[s] for s in ss) <= slots[ss[0]].available)  # C3
        for a, b in zip(ss, ss[1:]):
            m.add(opened[a] >= opened[b])
    for g, a in sorted(problem.available.items()):
        on_g = [s for s, i in enumerate(slots) if i.gpu == g]
        if a is not None and on_g:
            m.add(sum(slots[s].gpus * opened[s] for s in on_g) <= a)  # C3_gpus
    exact = all(scaled(i.price_per_hour).exact for i in slots)
    m.minimize(sum(scaled(i.price_per_hour).value * opened[s] for s, i in enumerate(slots)))
    if hint is not None:  # a known packing: open its nodes in slot order
        used: dict = {}
        for nd in hint:
            used.setdefault(nd.instance.key, []).append(nd)
        for key, nds in used.items():
            ss = [s for s, i in enumerate(slots) if i.key == key]
            for s, nd in zip(ss, nds):
                m.add_hint(opened[s], 1)
    solver = params.solver()
    st = cp_status(solver.solve(m))
    wall = time.perf_counter() - t0
    if st == Status.INFEASIBLE:
        return MonoResult(st, math.inf, math.inf, slots=len(slots), wall_s=wall)
    if not st.has_plan:
        return MonoResult(st, math.inf, 0.0, slots=len(slots), wall_s=wall)
    nodes, reps = _nodes(solver, slots, opened, r)
    routes = {((c, False), k): solver.value(v) * problem.demand[(c.model, k)] / shares
              for (c, k), v in y.items() if solver.value(v) > 0}
    slack = 0 if exact else 0.5 * len(slots)
    return MonoResult(st, sum(n.price for n in nodes),
                      max(solver.best_objective_bound - slack, 0) / SCALE, tuple(nodes), reps, routes,
                      len(slots), wall)


def _nodes(solver, slots, opened, r) -> tuple[list[Node], dict]:
    """The open slots as nodes, replicas on consecutive GPU ids (larger TP first); replica counts."""
    nodes, reps = [], {}
    for s, inst in enumerate(slots):
        if not solver.value(opened[s]):
            continue
        free, placed = list(range(inst.gpus)), []
        for (ss, c), v in sorted(r.items(), key=lambda kv: (kv[0][0], -kv[0][1].tp, kv[0][1])):
            if ss == s:
                for _ in range(solver.value(v)):
                    placed.append(Placed(c, tuple(free[:c.tp])))
                    free = free[c.tp:]
                    reps[(c, False)] = reps.get((c, False), 0) + 1
        nodes.append(Node(inst, False, tuple(placed)))
    return nodes, reps
