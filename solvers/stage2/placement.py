"""Stages 1 and 2 together on instance shapes, iterated until the node plan is proven within the gap.

1. Stage 1 (solvers/stage1.py) at each GPU type's cheapest $/GPU-hour over its instances: its bound
   is a lower bound on every instance plan (a node of G GPUs costs at least G times that price).
2. Stage 2 (solvers/stage2.py) packs its replicas onto instances. Gap closed: done. Otherwise a
   neighbourhood search (solvers/node_lns.py) re-plans a few models at a time at node prices, the
   rest fixed, and stage 2 packs what it finds (the plans at 50-200 models come from here).
3. Otherwise stage 1 again at node granularity (solvers/node_milp.py: node counts in the model,
   node prices, TP groups that fit a node; exact for 1/4/8-GPU nodes with TP 1/2/4/8), with each
   model's stage-1 bound as a cut (C10), so its LP starts at step 1's bound and its search goes to
   node rounding (handing HiGHS step 2's plan as a start made its plans worse at M); stage 2 packs
   its replicas.
4. Still open and small: the monolithic CP-SAT model (solvers/monolithic_cpsat.py) from the best plan.
The gap left, if any, is reported as it is. Spot shares, churn and partial service start at step 3:
plain stage 1 does not model them. Spare nodes are added in stage 2 (extra replicas so that each
group keeps what its load needs after losing any N nodes); their bound is the no-spare bound.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from gpumix.planner.errors import InfeasibleError, NoSolutionError
from gpumix.planner.problem import Problem
from gpumix.solvers.stage2 import node_search as node_lns
from gpumix.solvers.stage2 import node_milp
from gpumix.solvers.stage1.decompose import Progress, SolveParams
from gpumix.solvers.stage1.decompose import solve as stage1_solve
from gpumix.solvers.stage2.packing import CpParams, CurrentNode, Node, pack


LNS_SHARE = 0.8  # of the time left after stage 1 and its packing, for the node search
MILP_MIN_S = 2.0  # the node MILP (its build alone takes ~0.5 s at 50 models) only with this much left


@dataclass(frozen=True)
class PlacementOptions:
    time_limit: float | None = None
    mip_gap: float = 1e-4
    spare_nodes: int = 0
    spot_share: float = 0.0
    churn_cost: float = 0.0
    current_nodes: tuple[CurrentNode, ...] = ()
    current_counts: dict | None = None  # (config, spot) -> replicas running now
    partial: bool = False
    workers: int = 8
    seed: int = 0
    monolithic_max_slots: int = 48
    progress: Progress | None = None


@dataclass(frozen=True)
class PlacementSolution:
    status: str
    cost: float  # node $/hour
    bound: float  # lower bound on the node cost of every plan meeting the same terms
    replicas: dict
    routes: dict
    nodes: tuple[Node, ...]
    fractions: dict | None = None
    started: int = 0
    objective_bound: float | None = None  # churn: bound on cost + churn_cost * started
    method: str = ""
    iterations: list = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def gap(self) -> float:
        return 0.0 if self.cost <= 0 else max(self.cost - self.bound, 0.0) / self.cost


def place(problem: Problem, instances, opts: PlacementOptions = PlacementOptions()) -> PlacementSolution:
    t0 = time.perf_counter()
    deadline = None if opts.time_limit is None else t0 + opts.time_limit
    say = opts.progress or (lambda _m: None)

    def left(share=1.0):
        return None if deadline is None else max((deadline - time.perf_counter()) * share, 0.1)

    def cp(share):
        return CpParams(left(share), opts.workers, opts.seed)

    h = opts.churn_cost if opts.current_counts is not None else 0.0
    plain = opts.spot_share == 0 and opts.current_counts is None and not opts.partial
    iters: list[dict] = []
    best = None  # (objective, packing, routes, fractions)
    bound = 0.0
    model_bounds = None  # from plain stage 1: the C10 cuts of step 3

    def consider(label, pk, routes, fractions):
        nonlocal best
        obj = pk.cost + h * pk.started
        iters.append({"step": label, "node_cost": round(pk.cost, 9), "bound": round(bound, 9),
                      "status": pk.status})
        say(f"{label}: nodes ${pk.cost:,.2f}/h ({pk.status}), bound ${bound:,.2f}/h")
        if best is None or obj < best[0] - 1e-9:
            best = (obj, pk, routes, fractions)

    def closed():
        return best is not None and best[1].cost - bound <= opts.mip_gap * best[1].cost + 1e-9

    if plain:
        s1 = stage1_solve(problem, SolveParams(left(0.3), opts.mip_gap, False, None))
        bound = s1.bound
        model_bounds = s1.model_bounds
        reps = {(c, False): k for c, k in s1.replicas.items()}
        pk = pack(reps, instances, spare_nodes=opts.spare_nodes, params=cp(0.3))
        if pk.status in ("optimal", "feasible"):
            routes = {((c, False), k): v for (c, k), v in s1.routes.items()}
            consider("stage 1 at $/GPU, stage 2", pk, routes, None)
            if not closed() and not opts.spare_nodes:
                end = None if deadline is None else time.perf_counter() + left(LNS_SHARE)
                reps, routes, _, steps = node_lns.improve(problem, instances, reps, routes, end, model_bounds,
                                                          opts.seed, say)
                if steps:
                    pk = pack(reps, instances, params=cp(0.3))
                    if pk.status in ("optimal", "feasible"):
                        consider("node search, stage 2", pk, routes, None)
        else:  # e.g. a TP group larger than every instance of its GPU type
            iters.append({"step": "stage 1 at $/GPU, stage 2", "status": pk.status, "bound": round(bound, 9)})
    if (not closed() or opts.spare_nodes) and (best is None or deadline is None
                                               or deadline - time.perf_counter() > MILP_MIN_S):
        share = 0.85 if h == 0 and not opts.spare_nodes else 0.5  # else a second solve follows
        res = node_milp.solve(problem, instances, spot_share=opts.spot_share, current=opts.current_counts,
                              churn_cost=h, partial=opts.partial, time_limit=left(share),
                              mip_gap=opts.mip_gap * 0.1, spare_nodes=opts.spare_nodes, model_bounds=model_bounds)
        if res.status == "infeasible" and best is None:
            raise InfeasibleError(explain(problem, instances))
        if res.status == "no_solution" and best is None:
            raise NoSolutionError("no instance plan within the time limit; raise --time-limit")
        obj_bound = res.bound
        if res.status in ("optimal", "feasible"):
            if h == 0 and not opts.spare_nodes:  # with spares the model is a restriction: no bound
                bound = max(bound, res.bound)
            pk = pack(_needed(problem, res.replicas, res.routes) if opts.spare_nodes else res.replicas, instances, spare_nodes=opts.spare_nodes, current=opts.current_nodes,
                      churn_cost=h, params=cp(0.7))
            if pk.status in ("optimal", "feasible"):
                consider("stage 1 at node prices, stage 2", pk, res.routes, res.fractions)
            elif best is None:
                raise InfeasibleError("stage 2 cannot place the replicas on the instances: " + explain(problem, instances))
        if h > 0 or opts.spare_nodes:  # a bound on the node cost alone: the model without churn, spares
            free = node_milp.solve(problem, instances, spot_share=opts.spot_share, partial=False,
                                   time_limit=left(0.5), mip_gap=opts.mip_gap * 0.1)
            bound = max(bound, free.bound if free.status in ("optimal", "feasible") else 0.0)
    if best is None:
        raise NoSolutionError("no instance plan within the time limit; raise --time-limit")
    if plain and not opts.spare_nodes and not closed():
        from gpumix.solvers.stage2 import monolithic as monolithic_cpsat
        slots = len(monolithic_cpsat.slot_plan(problem, instances))
        if slots <= opts.monolithic_max_slots:
            mono = monolithic_cpsat.solve(problem, instances, cp(1.0), hint=best[1].nodes)
            iters.append({"step": "monolithic CP-SAT", "node_cost": round(mono.cost, 9), "status": mono.status})
            if mono.status in ("optimal", "feasible") and mono.cost < best[1].cost - 1e-9:
                from gpumix.solvers.stage2.packing import Packing
                pk = Packing(mono.status, mono.cost, 0.0, mono.nodes, mono.replicas)
                best = (mono.cost, pk, mono.routes, None)
    obj, pk, routes, fractions = best
    cost = pk.cost
    bound = min(bound, cost)
    gap = 0.0 if cost <= 0 else (cost - bound) / cost
    status = "optimal" if pk.status == "optimal" and gap <= opts.mip_gap + 1e-12 else "feasible"
    if h > 0:
        status = "optimal" if pk.status == "optimal" and obj - obj_bound <= opts.mip_gap * obj + 1e-9 else "feasible"
    method = "stage1+stage2" if len(iters) == 1 else "iterated"
    return PlacementSolution(status, cost, bound, pk.replicas, _trim_routes(routes, pk.replicas), pk.nodes,
                             fractions, pk.started, obj_bound if h > 0 else None, method, iters,
                             time.perf_counter() - t0)


def _needed(problem: Problem, replicas, routes) -> dict:
    """Replicas each group's load needs (the spares come on top in stage 2)."""
    load: dict = {}
    for (it, k), v in routes.items():
        load[it] = load.get(it, 0.0) + v / problem.capacity[it[0]][k]
    return {it: max(1, math.ceil(load[it] / problem.max_utilization - 1e-9)) for it in replicas if it in load}


def _trim_routes(routes, replicas):
    return {key: v for key, v in routes.items() if key[0] in replicas and v > 0}


def explain(problem: Problem, instances) -> str:
    """Why no instance plan exists, as far as a quick look tells."""
    largest: dict[str, int] = {}
    for i in instances:
        if i.available != 0:
            largest[i.gpu] = max(largest.get(i.gpu, 0), i.gpus)
    for m in problem.models:
        cs = problem.configs_of(m)
        if cs and all(c.tp > largest.get(c.gpu, 0) for c in cs):
            sizes = ", ".join(f"TP{c.tp} on {c.gpu}" for c in cs[:3])
            return (f"model {m!r} needs TP groups larger than any available instance of their GPU type "
                    f"({sizes}; a TP group must sit inside one node)")
    return ("the models together need more instances than available (availability counts nodes of each "
            "instance type and region); raise `available`, add instance types, or plan with --allow-partial")
