"""Stage 1 at node granularity: sizing and routing with instance counts in the model (PuLP + HiGHS).

The stage-1 model of planner/problem.py, with replicas split by variant v (on-demand, or spot when
a spot share is allowed) and, when instance shapes are given, node counts z[o] per offer o = (instance
type, variant) priced per node instead of per GPU:

Variables   n[c,v] in Z+; x[c,v,k] >= 0 req/s; z[o] in Z+ nodes; f[m] in [0,1] share served (partial)
Objective   min sum_o P[o] z[o] + h * sum_{c,v} s[c,v]          (h: churn $ per replica started)
C1_demand   sum_{c,v} x[c,v,k] = f[m] * d[m,k]                 (f = 1 unless partial)
C2_capacity sum_k x[c,v,k] / mu[c,k] <= U * n[c,v]
C3_avail    without shapes: sum_{c on g} t * n[c,v] <= A[g];  with shapes: sum_v z[(i,v)] <= A[i]
C3_gpus     with shapes and a cap A[g] on GPU type g (the workload's `gpus`): sum_{o on g} G[o] z[o] <= A[g]
            (the GPUs of the nodes rented hold the GPUs used, so this is no looser than the checker's C3)
C5_open     x[c,v,k] <= d[m,k] * n[c,v]
C6_nodes    for each GPU type g, variant v and TP degree t used on g:
              sum_{o on (g,v)} t * floor(G[o] / t) * z[o] >= sum_{c on g, tp >= t} tp * n[c,v]
            (TP groups of t or more GPUs fit only t * floor(G/t) GPUs of a G-GPU node: a relaxation of
            packing, and an exact one when node sizes and TP degrees divide each other, as 1/4/8-GPU
            nodes and TP 1/2/4/8 do; see docs/placement.md)
C7_spot     sum_{c of m, k} x[c,spot,k] <= F * f[m] * D[m]    (at most F of each model's traffic on spot)
C8_churn    s[c,v] >= n[c,v] - n0[c,v]                         (replicas beyond the current plan's)
C10_model   (model_bounds LB_m, all demand on on-demand nodes) sum_{c of m} price[g] tp n[c] >= LB_m:
            every plan of m alone costs at least m's own stage-1 bound at the cheapest $/GPU, so this cut
            cuts off no plan; it lifts the LP relaxation to the decomposition's bound and lets HiGHS
            spend its search on node rounding instead of on each model's own integrality
C9_spare    (N spare nodes) sum_k x[c,v,k] / mu[c,k] <= U (n[c,v] - N y[c,v]), n <= B y, y binary, and
            n[c,v] <= sum_{o fits c} z[o]: every replica of a group on its own node, N of them spare.
            A restriction, not a relaxation: the bound reported for spare-node plans comes from the
            model without spares (solvers/stage2/placement.py)

Every plan of the node problem gives a solution of this model with no larger objective, so the
model's dual bound is a lower bound on every instance plan (and on cost plus churn).
Partial service (allow_partial) solves three times: max the smallest f, then the sum of f with the
smallest fixed, then the cost with both fixed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pulp

from gpumix.planner.instances import InstanceType
from gpumix.planner.problem import BucketKey, Config, Problem
from gpumix.solvers.highs import run_highs
from gpumix.solvers.result import Deadline, Status
from gpumix.solvers.stage1 import milp

Item = tuple[Config, bool]  # (config, on spot)
Offer = tuple[InstanceType, bool]

# Partial service: time shares of the first two solves (the cost solve gets the rest)
MIN_SERVED_SHARE = 0.3  # max the smallest served share
TOTAL_SERVED_SHARE = 0.4  # max the sum of served shares
FLOOR_S = 0.05


@dataclass(frozen=True)
class NodeMilpResult:
    status: Status
    objective: float | None  # cost (+ churn) of the incumbent
    bound: float
    replicas: dict[Item, int] = field(default_factory=dict)
    routes: dict[tuple[Item, BucketKey], float] = field(default_factory=dict)
    nodes: dict[Offer, int] = field(default_factory=dict)
    fractions: dict[str, float] | None = None
    wall_s: float = 0.0


def offers_of(instances, spot_share: float) -> list[Offer]:
    out = [(i, False) for i in instances if i.available != 0]
    if spot_share > 0:
        out += [(i, True) for i in instances if i.available != 0 and i.spot_price_per_hour is not None]
    return out


_name = milp.var_name


class NodeModel:
    """The model of the module docstring, built in sections: variables, C1, C2/C5/C9, C3/C6 (nodes)
    or C3 (loose GPUs), C7, C10, C8. `objective` is cost + churn, `cost_expr` the cost alone."""

    def __init__(self, problem: Problem, instances, spot_share: float, current: dict[Item, int] | None,
                 churn_cost: float, partial: bool, spare: int = 0, model_bounds: dict | None = None,
                 background: dict | None = None):
        """background: {(gpu, spot): {tp: groups}} of models outside this problem whose replicas stay
        as they are (solvers/stage2/node_search.py): they count in C6, so z prices every node."""
        self.problem = problem
        self.prob = p = pulp.LpProblem("gpumix_nodes", pulp.LpMinimize)
        self.variants = (False, True) if spot_share > 0 and instances else (False,)
        self.offers = offers_of(instances, spot_share) if instances else []
        spot_gpus = {i.gpu for i, v in self.offers if v}
        self.items = items = [(c, v) for c in problem.configs for v in self.variants if not v or c.gpu in spot_gpus]
        # n[c,v] replicas; x[c,v,k] req/s routed; f[m] share served; z[o] nodes of offer o
        self.n = {it: p.add_variable(_name("n", j), lowBound=0, cat=pulp.LpInteger) for j, it in enumerate(items)}
        self.x = {(it, k): p.add_variable(_name("x", j, *k), lowBound=0)
                  for j, it in enumerate(items) for k in problem.capacity[it[0]]}
        self.f = {m: (p.add_variable(_name("f", j), lowBound=0, upBound=1) if partial else 1.0)
                  for j, m in enumerate(problem.models)}
        self.z = {o: p.add_variable(_name("z", j), lowBound=0, upBound=o[0].available, cat=pulp.LpInteger)
                  for j, o in enumerate(self.offers)}
        self._demand()
        self._capacity(spare if instances else 0)
        self.cost_expr = self._nodes(background or {}) if instances else self._gpus()
        if spot_share > 0 and len(self.variants) > 1:
            self._spot(spot_share)
        if model_bounds and not partial and len(self.variants) == 1:
            self._model_cuts(model_bounds)
        churn = self._churn(current, churn_cost) if current is not None and churn_cost > 0 else 0
        self.objective = self.cost_expr + churn
        p.setObjective(self.objective)

    def _demand(self) -> None:
        """C1: every bucket's (served share of) demand routed."""
        problem, p = self.problem, self.prob
        by_bucket: dict = {}
        for (it, k) in self.x:
            by_bucket.setdefault((it[0].model, k), []).append(it)
        for mi, m in enumerate(problem.models):
            for k in problem.buckets[m]:
                d = problem.demand[(m, k)]
                p += pulp.lpSum(self.x[it, k] for it in by_bucket.get((m, k), [])) == d * self.f[m], \
                    _name("C1_demand", mi, *k)

    def _capacity(self, spare: int) -> None:
        """C2 capacity and C5 open per item; with spare nodes C9 (spares on their own nodes)."""
        problem, p = self.problem, self.prob
        U = problem.max_utilization
        for j, it in enumerate(self.items):
            c = it[0]
            mu = problem.capacity[c]
            if spare:
                y = p.add_variable(_name("y", j), cat=pulp.LpBinary)
                fits = [o for o in self.offers if o[0].gpu == c.gpu and o[1] == it[1] and o[0].gpus >= c.tp]
                big = sum(o[0].available or 10_000 for o in fits)
                p += self.n[it] <= big * y, _name("C9_used", j)
                p += (pulp.lpSum((1.0 / mu[k]) * self.x[it, k] for k in mu)
                      <= U * (self.n[it] - spare * y)), _name("C9_spare", j)
                p += self.n[it] <= pulp.lpSum(self.z[o] for o in fits), _name("C9_spread", j)
            p += pulp.lpSum((1.0 / mu[k]) * self.x[it, k] for k in mu) <= U * self.n[it], _name("C2_capacity", j)
            for k in mu:
                d = problem.demand[(c.model, k)]
                if d < U * mu[k]:
                    p += self.x[it, k] <= d * self.n[it], _name("C5_open", j, *k)

    def _nodes(self, background: dict):
        """C3 per instance type over its variants and C6 per GPU type, variant and TP degree; the
        node price."""
        p = self.prob
        by_inst: dict = {}
        for o in self.offers:
            by_inst.setdefault(o[0].key, []).append(o)
        for j, (key, os_) in enumerate(sorted(by_inst.items())):
            a = os_[0][0].available
            if a is not None and len(os_) > 1:
                p += pulp.lpSum(self.z[o] for o in os_) <= a, _name("C3_avail", j)
        for g, a in sorted(self.problem.available.items()):
            on_g = [o for o in self.offers if o[0].gpu == g]
            if a is not None and on_g:
                p += pulp.lpSum(o[0].gpus * self.z[o] for o in on_g) <= a, _name("C3_gpus", g)
        for g in sorted({c.gpu for c in self.problem.configs} | {g for g, _ in background}):
            for v in self.variants:
                on = [it for it in self.items if it[0].gpu == g and it[1] == v]
                offers = [o for o in self.offers if o[0].gpu == g and o[1] == v]
                fixed = background.get((g, v), {})
                for t in sorted({it[0].tp for it in on} | set(fixed)):
                    p += (pulp.lpSum(t * (o[0].gpus // t) * self.z[o] for o in offers)
                          >= pulp.lpSum(it[0].tp * self.n[it] for it in on if it[0].tp >= t)
                          + sum(tp * k for tp, k in fixed.items() if tp >= t)), \
                        _name("C6_nodes", g, int(v), t)
        return pulp.lpSum(o[0].price(o[1]) * self.z[o] for o in self.offers)

    def _gpus(self):
        """Without instance shapes: C3 per GPU type; the GPU price."""
        problem, p = self.problem, self.prob
        for g in sorted(problem.price):
            a = problem.available.get(g)
            on = [it for it in self.items if it[0].gpu == g]
            if a is not None and on:
                p += pulp.lpSum(it[0].tp * self.n[it] for it in on) <= a, _name("C3_avail", g)
        return pulp.lpSum(problem.config_cost(it[0]) * self.n[it] for it in self.items)

    def _spot(self, spot_share: float) -> None:
        """C7: at most spot_share of each model's (served) traffic on spot."""
        problem, p = self.problem, self.prob
        for mi, m in enumerate(problem.models):
            spot = [key for key in self.x if key[0][0].model == m and key[0][1]]
            if spot:
                total = sum(problem.demand[(m, k)] for k in problem.buckets[m])
                p += pulp.lpSum(self.x[key] for key in spot) <= spot_share * total * self.f[m], \
                    _name("C7_spot", mi)

    def _model_cuts(self, model_bounds: dict) -> None:
        """C10: each model's replicas cost at least its own stage-1 bound."""
        problem, p = self.problem, self.prob
        for mi, m in enumerate(problem.models):
            if model_bounds.get(m, 0) > 0:
                p += (pulp.lpSum(problem.config_cost(it[0]) * self.n[it] for it in self.items if it[0].model == m)
                      >= model_bounds[m]), _name("C10_model", mi)

    def _churn(self, current: dict[Item, int], churn_cost: float):
        """C8: s[c,v] replicas started beyond the current plan's; their price."""
        p = self.prob
        s = {it: p.add_variable(_name("s", j), lowBound=0) for j, it in enumerate(self.items)}
        for j, it in enumerate(self.items):
            p += s[it] >= self.n[it] - current.get(it, 0), _name("C8_churn", j)
        return churn_cost * pulp.lpSum(s.values())


def solve(problem: Problem, instances=None, *, spot_share: float = 0.0, current: dict[Item, int] | None = None,
          churn_cost: float = 0.0, partial: bool = False, time_limit: float | None = None,
          mip_gap: float = 1e-6, threads: int | None = None, spare_nodes: int = 0,
          model_bounds: dict[str, float] | None = None) -> NodeMilpResult:
    """model_bounds: each model's own lower bound at problem.price (C10 cuts)."""
    t0 = time.perf_counter()
    deadline = Deadline.start(time_limit)
    mdl = NodeModel(problem, instances, spot_share, current, churn_cost, partial, spare_nodes, model_bounds)
    fractions = None
    if partial:
        tvar = mdl.prob.add_variable("t_min_served", lowBound=0, upBound=1)
        for j, m in enumerate(problem.models):
            mdl.prob += mdl.f[m] >= tvar, _name("P1_min", j)
        mdl.prob.setObjective(-tvar)
        first = run_highs(mdl.prob, deadline.left(MIN_SERVED_SHARE, floor=FLOOR_S), 1e-9, threads)
        if not first.status.has_plan:
            return NodeMilpResult(first.status, None, math.inf if first.status == Status.INFEASIBLE else 0.0,
                                  wall_s=time.perf_counter() - t0)
        t_star = max(0.0, tvar.varValue or 0.0) * (1 - 1e-7)
        tvar.lowBound = t_star
        mdl.prob.setObjective(-pulp.lpSum(mdl.f.values()))
        run_highs(mdl.prob, deadline.left(TOTAL_SERVED_SHARE, floor=FLOOR_S), 1e-9, threads)
        total = sum(v.varValue or 0.0 for v in mdl.f.values()) * (1 - 1e-7)
        mdl.prob += pulp.lpSum(mdl.f.values()) >= total, "P2_total"
    mdl.prob.setObjective(mdl.objective)
    res = run_highs(mdl.prob, deadline.left(floor=FLOOR_S), mip_gap, threads)
    st, obj, bound = res.status, res.objective, res.bound
    if not st.has_plan:
        return NodeMilpResult(st, None, bound, wall_s=time.perf_counter() - t0)
    if partial:
        fractions = {m: min(1.0, max(0.0, v.varValue or 0.0)) for m, v in mdl.f.items()}
    reps = {it: int(round(v.varValue or 0)) for it, v in mdl.n.items()}
    routes = {key: max(v.varValue or 0.0, 0.0) for key, v in mdl.x.items()}
    reps, routes = clean(problem, reps, routes, fractions)
    nodes = {o: int(round(v.varValue or 0)) for o, v in mdl.z.items() if (v.varValue or 0) > 0.5}
    return NodeMilpResult(st, obj, min(bound, obj) if obj is not None else bound, reps, routes, nodes,
                          fractions, time.perf_counter() - t0)


def clean(problem: Problem, n: dict, x: dict, fractions: dict | None):
    """Drop solver noise, rescale each bucket to exactly its served demand, trim idle replicas."""
    x = {key: v for key, v in x.items() if v > 1e-9 and n.get(key[0], 0) > 0}
    per_bucket: dict = {}
    for (it, k), v in x.items():
        per_bucket[(it[0].model, k)] = per_bucket.get((it[0].model, k), 0.0) + v
    out = {}
    for (it, k), v in x.items():
        m = it[0].model
        want = problem.demand[(m, k)] * (1.0 if fractions is None else fractions[m])
        out[(it, k)] = v * want / per_bucket[(m, k)]
    load: dict = {}
    for (it, k), v in out.items():
        load[it] = load.get(it, 0.0) + v / problem.capacity[it[0]][k]
    reps = {}
    for it, count in n.items():
        if it in load and count > 0:
            reps[it] = min(count, max(1, math.ceil(load[it] / problem.max_utilization - 1e-9)))
    return dict(sorted(reps.items())), dict(sorted(out.items()))
