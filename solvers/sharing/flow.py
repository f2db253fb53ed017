"""`gpumix plan --share-gpus`: the plan_workload path when models may share GPU sets.

Without instance shapes the shared solve (solvers/sharing/pooled.py) is the plan. With them, only configs
whose TP group fits some instance of its GPU type are planned; the solve's dedicated replicas and
every set of its shared groups (a TP group of tp GPUs, inside one node like a replica) are packed onto
instances by stage 2 (solvers/stage2/packing.py), and cost_per_hour is the sum of node prices; when the
dedicated-only instance plan (solvers/stage2/placement.py) costs less, it is the plan. The bound stays the
shared solve's: it prices every GPU at its type's cheapest instance $/GPU-hour, and a node of G GPUs
costs at least G times that, so it bounds every node plan, with shared sets or without.
"""
from __future__ import annotations

from pathlib import Path

from gpumix.planner.errors import GpumixError, InfeasibleError
from gpumix.planner.plan import make_node_plan, make_plan
from gpumix.planner.sharing import SetItem, shared_entries, sharing_for
from gpumix.solvers.cpsat import CpParams
from gpumix.solvers.result import Deadline, Status, certify
from gpumix.solvers.sharing.pooled import ShareParams, solve_shared
from gpumix.solvers.stage2.packing import pack
from gpumix.solvers.stage2.placement import PlacementOptions, explain, place

# Time, when the workload lists instances
SHARE_SOLVE = 0.5  # of the time limit for the shared solve
PACK_SHARE = 0.3  # of what is left, to pack its replicas and sets (the dedicated-only plan gets the rest)
FLOOR_S = 0.5  # least time for packing and the dedicated-only plan
SOLVE_FLOOR_S = 0.05  # least time for the shared solve


def plan_shared(workload, problem, profiles_path: Path | str | None, options, deadline: Deadline):
    """A Draft (the plan without `inputs`) for solvers/pipeline.py to finish."""
    from gpumix.solvers.pipeline import Draft

    full = problem
    sharing = sharing_for(workload, problem, profiles_path, options.efficiency)
    limit = deadline.left(SHARE_SOLVE if workload.instances else 1.0, floor=SOLVE_FLOOR_S)
    if workload.instances:
        problem = _fitting(problem, workload.instances)
    sol = solve_shared(problem, sharing, ShareParams(limit, options.mip_gap, options.workers, options.seed,
                                                     options.progress, instances=tuple(workload.instances or ())))
    notes = tuple(f"{m} is not shared: {why}" for m, why in sol.unshareable.items())
    shared = shared_entries(problem, sharing, list(sol.shared))
    solver = {"stage1": "PuLP + HiGHS, CP-SAT", "method": sol.method, "mip_gap": options.mip_gap,
              "whole_buckets": False,
              "dedicated_only_cost_per_hour": None if sol.dedicated_only_cost is None
              else round(sol.dedicated_only_cost, 9)}
    if workload.instances:
        plan = _on_instances(problem, sol, shared, workload.instances, options, deadline, solver)
    else:
        plan = make_plan(problem, sol.status.value, sol.cost, sol.bound, sol.replicas, sol.routes,
                         solver=solver, shared=shared)
    return Draft(plan, sol, full, None, notes, sharing)


def _fitting(problem, instances):
    """Only the configs whose TP group fits some instance of its GPU type (a TP group or a shared set
    sits inside one node): exact, not a relaxation, since no node plan has the others."""
    largest: dict[str, int] = {}
    for i in instances:
        if i.available != 0:
            largest[i.gpu] = max(largest.get(i.gpu, 0), i.gpus)
    fitting = problem.restrict(keep=lambda c: c.tp <= largest.get(c.gpu, 0))
    if any(not fitting.configs_of(m) for m in problem.models):
        raise InfeasibleError(explain(problem, instances))
    return fitting


def _on_instances(problem, sol, shared, instances, options, deadline: Deadline, solver):
    """Stage 2: the dedicated replicas and the shared sets onto instances; the dedicated-only
    instance plan instead when node prices make it cheaper."""
    need = {(c, False): k for c, k in sol.replicas.items()}
    for i, s in enumerate(sol.shared):
        need[(SetItem(i, s.gpu, s.tp), False)] = s.count

    say = options.progress or (lambda _m: None)
    pk = pack(need, instances, params=CpParams(deadline.left(PACK_SHARE, floor=FLOOR_S), options.workers,
                                               options.seed), gpu_caps=problem.available)
    say(f"stage 2: {len(pk.nodes)} nodes ${pk.cost:,.2f}/h ({pk.status})")
    dedicated = None
    try:
        dedicated = place(problem, instances, PlacementOptions(time_limit=deadline.left(floor=FLOOR_S),
                                                                mip_gap=options.mip_gap,
                                                                workers=options.workers, seed=options.seed))
        say(f"dedicated-only instance plan: ${dedicated.cost:,.2f}/h ({dedicated.status})")
    except GpumixError:
        pass
    packed = pk.status.has_plan
    if dedicated is not None and (not packed or dedicated.cost < pk.cost - 1e-9):
        cost, parts_optimal, replicas, routes, nodes, shared = (
            dedicated.cost, dedicated.status == Status.OPTIMAL, dedicated.replicas, dedicated.routes,
            dedicated.nodes, [])
    elif packed:
        cost, parts_optimal, replicas, routes, nodes = (
            pk.cost, sol.status == Status.OPTIMAL and pk.status == Status.OPTIMAL,
            {(c, False): k for c, k in sol.replicas.items()},
            {((c, False), k): v for (c, k), v in sol.routes.items()}, pk.nodes)
    else:
        raise InfeasibleError("stage 2 cannot place the plan's replicas and shared sets on the instances: "
                              + explain(problem, instances))
    bound = min(sol.bound, cost)  # bounds every plan, with shared sets or without
    cert = certify(cost, bound, proven=parts_optimal, mip_gap=options.mip_gap)
    say(f"{cert.status}: {len(nodes)} nodes ${cost:,.2f}/h, bound ${bound:,.2f}/h, gap {cert.gap:.4%}")
    solver = {**solver, "stage2": "OR-Tools CP-SAT",
              "dedicated_only_cost_per_hour": None if dedicated is None else round(dedicated.cost, 9)}
    return make_node_plan(problem, cert.status.value, cost, bound, replicas, routes, nodes, solver=solver,
                          shared=shared)
