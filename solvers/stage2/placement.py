"""Stages 1 and 2 together on instance shapes, iterated until the node plan is proven within the gap.

1. Stage 1 (solvers/stage1/decompose.py) at each GPU type's cheapest $/GPU-hour over its instances: its bound
   is a lower bound on every instance plan (a node of G GPUs costs at least G times that price).
2. Stage 2 (solvers/stage2/packing.py) packs its replicas onto instances. Gap closed: done. Otherwise a
   neighbourhood search (solvers/stage2/node_search.py) re-plans a few models at a time at node prices, the
   rest fixed, and stage 2 packs what it finds (the plans at 50-200 models come from here).
3. Otherwise stage 1 again at node granularity (solvers/stage2/node_milp.py: node counts in the model,
   node prices, TP groups that fit a node; exact for 1/4/8-GPU nodes with TP 1/2/4/8), with each
   model's stage-1 bound as a cut (C10), so its LP starts at step 1's bound and its search goes to
   node rounding (handing HiGHS step 2's plan as a start made its plans worse at M); stage 2 packs
   its replicas.
4. Still open and small: the monolithic CP-SAT model (solvers/stage2/monolithic.py) from the best plan.
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
from gpumix.solvers.cpsat import CpParams
from gpumix.solvers.result import INNER_GAP, Deadline, Status, certify, closed, gap
from gpumix.solvers.stage1.decompose import Progress, SolveParams
from gpumix.solvers.stage1.decompose import solve as stage1_solve
from gpumix.solvers.stage2 import monolithic
from gpumix.solvers.stage2 import node_milp
from gpumix.solvers.stage2 import node_search
from gpumix.solvers.stage2.packing import CurrentNode, Node, Packing, pack

# Time: shares of what is left when a step starts
STAGE1_SHARE = 0.3  # step 1, plain stage 1 at $/GPU
PACK_SHARE = 0.3  # stage 2 after steps 1 and 2
LNS_SHARE = 0.8  # step 2, the node search
NODE_MILP_SHARE = 0.85  # step 3, the node MILP ...
NODE_MILP_SHARE_TWICE = 0.5  # ... when a second solve (the bound without churn or spares) follows
NODE_PACK_SHARE = 0.7  # stage 2 after step 3
FREE_SHARE = 0.5  # the bound solve without churn or spares
MONOLITHIC_SHARE = 1.0  # step 4
FLOOR_S = 0.1  # no step gets less
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
    status: Status
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
        return gap(self.cost, self.bound)


@dataclass(frozen=True)
class _Candidate:
    objective: float  # node cost + churn
    packing: Packing
    routes: dict
    fractions: dict | None


@dataclass
class _Search:
    """What the steps of place() share: the best plan so far, the bound, the log of steps."""

    problem: Problem
    instances: object
    opts: PlacementOptions
    deadline: Deadline
    churn: float  # h: $ per replica started (0 without a current plan)
    bound: float = 0.0
    objective_bound: float | None = None  # of the churn model: on cost + churn
    best: _Candidate | None = None
    iterations: list = field(default_factory=list)
    model_bounds: dict | None = None  # from plain stage 1: the C10 cuts of step 3

    def say(self, msg: str) -> None:
        if self.opts.progress:
            self.opts.progress(msg)

    def cp(self, share: float) -> CpParams:
        return CpParams(self.deadline.left(share, floor=FLOOR_S), self.opts.workers, self.opts.seed)

    def consider(self, label: str, pk: Packing, routes: dict, fractions: dict | None) -> None:
        obj = pk.cost + self.churn * pk.started
        self.iterations.append({"step": label, "node_cost": round(pk.cost, 9), "bound": round(self.bound, 9),
                                "status": pk.status.value})
        self.say(f"{label}: nodes ${pk.cost:,.2f}/h ({pk.status}), bound ${self.bound:,.2f}/h")
        if self.best is None or obj < self.best.objective - 1e-9:
            self.best = _Candidate(obj, pk, routes, fractions)

    def closed(self) -> bool:
        return self.best is not None and closed(self.best.packing.cost, self.bound, self.opts.mip_gap)


def place(problem: Problem, instances, opts: PlacementOptions = PlacementOptions()) -> PlacementSolution:
    """Steps 1-4 of the module docstring, each while the gap is open and time is left."""
    t0 = time.perf_counter()
    h = opts.churn_cost if opts.current_counts is not None else 0.0
    run = _Search(problem, instances, opts, Deadline.start(opts.time_limit), h)
    plain = opts.spot_share == 0 and opts.current_counts is None and not opts.partial
    if plain:
        _stage1_then_pack(run)
    if (not run.closed() or opts.spare_nodes) and (run.best is None or run.deadline.remaining() > MILP_MIN_S):
        _node_milp_then_pack(run)
    if run.best is None:
        raise NoSolutionError("no instance plan within the time limit; raise --time-limit")
    if plain and not opts.spare_nodes and not run.closed():
        _monolithic(run)
    best = run.best
    pk = best.packing
    bound = min(run.bound, pk.cost)
    status = certify(pk.cost, bound, proven=pk.status == Status.OPTIMAL, mip_gap=opts.mip_gap).status
    if h > 0:  # certified on the objective (cost + churn) against the churn model's bound
        status = certify(best.objective, run.objective_bound, proven=pk.status == Status.OPTIMAL,
                         mip_gap=opts.mip_gap).status
    return PlacementSolution(
        status=status, cost=pk.cost, bound=bound, replicas=pk.replicas,
        routes=_trim_routes(best.routes, pk.replicas), nodes=pk.nodes, fractions=best.fractions,
        started=pk.started, objective_bound=run.objective_bound if h > 0 else None,
        method="stage1+stage2" if len(run.iterations) == 1 else "iterated", iterations=run.iterations,
        wall_s=time.perf_counter() - t0)


def _stage1_then_pack(run: _Search) -> None:
    """Steps 1 and 2: plain stage 1 at $/GPU packed; then the node search, packed."""
    problem, instances, opts = run.problem, run.instances, run.opts
    s1 = stage1_solve(problem, SolveParams(run.deadline.left(STAGE1_SHARE, floor=FLOOR_S), opts.mip_gap, False, None))
    run.bound = s1.bound
    run.model_bounds = s1.model_bounds
    reps = {(c, False): k for c, k in s1.replicas.items()}
    pk = pack(reps, instances, spare_nodes=opts.spare_nodes, params=run.cp(PACK_SHARE), gpu_caps=problem.available)
    if not pk.status.has_plan:  # e.g. a TP group larger than every instance of its GPU type
        run.iterations.append({"step": "stage 1 at $/GPU, stage 2", "status": pk.status.value,
                               "bound": round(run.bound, 9)})
        return
    routes = {((c, False), k): v for (c, k), v in s1.routes.items()}
    run.consider("stage 1 at $/GPU, stage 2", pk, routes, None)
    if run.closed() or opts.spare_nodes:
        return
    found = node_search.improve(problem, instances, reps, routes, run.deadline.sub(LNS_SHARE, floor=FLOOR_S),
                                run.model_bounds, opts.seed, run.say)
    if found.steps:
        pk = pack(found.replicas, instances, params=run.cp(PACK_SHARE), gpu_caps=problem.available)
        if pk.status.has_plan:
            run.consider("node search, stage 2", pk, found.routes, None)


def _node_milp_then_pack(run: _Search) -> None:
    """Step 3: stage 1 at node granularity (with spot, churn, partial service, spares), packed; with
    churn or spares, a second solve without them for the bound on the node cost alone."""
    problem, instances, opts, h = run.problem, run.instances, run.opts, run.churn
    share = NODE_MILP_SHARE if h == 0 and not opts.spare_nodes else NODE_MILP_SHARE_TWICE
    res = node_milp.solve(problem, instances, spot_share=opts.spot_share, current=opts.current_counts,
                          churn_cost=h, partial=opts.partial, time_limit=run.deadline.left(share, floor=FLOOR_S),
                          mip_gap=opts.mip_gap * INNER_GAP, spare_nodes=opts.spare_nodes, model_bounds=run.model_bounds)
    if res.status == Status.INFEASIBLE and run.best is None:
        raise InfeasibleError(explain(problem, instances))
    if res.status == Status.NO_SOLUTION and run.best is None:
        raise NoSolutionError("no instance plan within the time limit; raise --time-limit")
    run.objective_bound = res.bound
    if res.status.has_plan:
        if h == 0 and not opts.spare_nodes:  # with spares the model is a restriction: no bound
            run.bound = max(run.bound, res.bound)
        need = _needed(problem, res.replicas, res.routes) if opts.spare_nodes else res.replicas
        pk = pack(need, instances, spare_nodes=opts.spare_nodes, current=opts.current_nodes,
                  churn_cost=h, params=run.cp(NODE_PACK_SHARE), gpu_caps=problem.available)
        if pk.status.has_plan:
            run.consider("stage 1 at node prices, stage 2", pk, res.routes, res.fractions)
        elif run.best is None:
            raise InfeasibleError("stage 2 cannot place the replicas on the instances: " + explain(problem, instances))
    if h > 0 or opts.spare_nodes:  # a bound on the node cost alone: the model without churn, spares
        free = node_milp.solve(problem, instances, spot_share=opts.spot_share, partial=False,
                               time_limit=run.deadline.left(FREE_SHARE, floor=FLOOR_S), mip_gap=opts.mip_gap * INNER_GAP)
        run.bound = max(run.bound, free.bound if free.status.has_plan else 0.0)


def _monolithic(run: _Search) -> None:
    """Step 4: the monolithic CP-SAT model from the best plan, when it is small."""
    slots = len(monolithic.slot_plan(run.problem, run.instances))
    if slots > run.opts.monolithic_max_slots:
        return
    mono = monolithic.solve(run.problem, run.instances, run.cp(MONOLITHIC_SHARE), hint=run.best.packing.nodes)
    run.iterations.append({"step": "monolithic CP-SAT", "node_cost": round(mono.cost, 9),
                           "status": mono.status.value})
    if mono.status.has_plan and mono.cost < run.best.packing.cost - 1e-9:
        pk = Packing(mono.status, mono.cost, 0.0, mono.nodes, mono.replicas)
        run.best = _Candidate(mono.cost, pk, mono.routes, None)


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
    caps = ", ".join(f"{a} {g}" for g, a in sorted(problem.available.items()) if a is not None)
    capped = f"; the workload's `gpus` cap the GPUs of the nodes rented at {caps}" if caps else ""
    return ("the models together need more instances than available (availability counts nodes of each "
            f"instance type and region{capped}); raise `available`, add instance types, or plan with "
            "--allow-partial")
