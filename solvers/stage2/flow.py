"""The `gpumix plan` path for instance shapes, re-planning, spare nodes, spot shares and partial plans.

solvers/pipeline.py hands over here when the workload lists `instances` or one of those options is
set; plans without them never come here and keep their exact bytes. It returns a Draft (the plan
without `inputs`) that the pipeline finishes: inputs, checker, result.
"""
from __future__ import annotations

from dataclasses import replace

from gpumix.planner.errors import InfeasibleError, InputError
from gpumix.planner.plan import make_node_plan, make_partial_plan, make_plan
from gpumix.planner.problem import Problem
from gpumix.solvers.stage2 import churn
from gpumix.solvers.stage2 import node_milp
from gpumix.solvers.result import INNER_GAP, Deadline, Status, certify
from gpumix.solvers.stage1.decompose import SolveParams
from gpumix.solvers.stage1.decompose import solve as stage1_solve
from gpumix.solvers.stage2.placement import PlacementOptions, PlacementSolution, place

FLOOR_S = 0.05  # least time one solve gets


def plan_extended(workload, problem: Problem, options, deadline: Deadline):
    """The plan (without inputs) within what `deadline` (the command's) has left."""
    from gpumix.solvers.pipeline import Draft

    instances = workload.instances
    if not instances and (options.spare_nodes or options.spot_share):
        flag = "--spare-nodes" if options.spare_nodes else "--spot-share"
        raise InputError(str(workload.path), "instances",
                         f"{flag} needs instance shapes: add `instances: catalog` or a list to the workload")
    if options.spot_share and not any(i.spot_price_per_hour for i in instances):
        raise InputError(str(workload.path), "instances", "--spot-share: no instance has a spot_price_per_hour")
    current_nodes, current_counts = (), None
    if options.current:
        current_nodes, current_counts = churn.read_current(options.current, problem, instances)
    if instances:
        plan, sol = _with_instances(problem, instances, options, current_nodes, current_counts, deadline)
    else:
        plan, sol = _without_instances(problem, options, current_counts, deadline)
    return Draft(plan, sol, problem)


def _with_instances(problem, instances, options, current_nodes, current_counts, deadline):
    popts = PlacementOptions(
        time_limit=deadline.left(floor=FLOOR_S), mip_gap=options.mip_gap, spare_nodes=options.spare_nodes,
        spot_share=options.spot_share, churn_cost=options.churn_cost, current_nodes=current_nodes,
        current_counts=current_counts, workers=options.workers, seed=options.seed, progress=options.progress)
    try:
        sol = place(problem, instances, popts)
    except InfeasibleError as e:
        if not options.allow_partial:
            raise
        _say(options, f"infeasible in full ({e}); planning the largest servable share")
        sol = place(problem, instances, replace(popts, partial=True, time_limit=deadline.left(floor=FLOOR_S)))
    extra = {"spare_nodes": options.spare_nodes, "spot_share": options.spot_share}
    if options.current:
        extra["churn"] = {"cost_per_replica_started": options.churn_cost, "replicas_started": sol.started,
                          "objective_per_hour": round(sol.cost + options.churn_cost * sol.started, 9),
                          "objective_lower_bound": sol.objective_bound}
        extra["changes"] = churn.diff_nodes(current_nodes, sol.nodes) if current_nodes else \
            churn.diff_counts(current_counts, sol.replicas)
    plan = make_node_plan(
        problem, sol.status.value, sol.cost, sol.bound, sol.replicas, sol.routes, sol.nodes,
        fractions=sol.fractions, extra=extra, baseline=None,
        solver={"stage1": "PuLP + HiGHS", "stage2": "OR-Tools CP-SAT", "method": sol.method,
                "mip_gap": options.mip_gap, "iterations": sol.iterations, "workers": options.workers,
                "seed": options.seed})
    return plan, sol


def _without_instances(problem, options, current_counts, deadline):
    """Partial service and churn on loose GPUs: the node-granular model without nodes."""
    h = options.churn_cost if current_counts is not None else 0.0
    solver = {"stage1": "PuLP + HiGHS", "method": "node_milp", "mip_gap": options.mip_gap}
    fractions = None
    res = node_milp.solve(problem, None, current=current_counts, churn_cost=h,
                          time_limit=deadline.left(floor=FLOOR_S), mip_gap=options.mip_gap * INNER_GAP)
    if res.status == Status.INFEASIBLE:
        if not options.allow_partial:
            stage1_solve(problem, SolveParams(deadline.left(floor=FLOOR_S), options.mip_gap))  # raises the reason
            raise InfeasibleError("no plan meets the demand within availability")
        res = node_milp.solve(problem, None, current=current_counts, churn_cost=h, partial=True,
                              time_limit=deadline.left(floor=FLOOR_S), mip_gap=options.mip_gap * INNER_GAP)
        fractions = res.fractions
    if not res.status.has_plan:
        raise InfeasibleError("no plan found")
    replicas = {c: k for (c, _), k in res.replicas.items()}
    routes = {(c, k): v for ((c, _), k), v in res.routes.items()}
    cost = sum(problem.config_cost(c) * k for c, k in replicas.items())
    started = sum(max(0, k - (current_counts or {}).get((c, False), 0)) for c, k in replicas.items())
    bound = res.bound
    if h > 0:  # the churn model's bound is on cost + churn: bound the cost alone without churn
        free = node_milp.solve(problem, None, partial=False, time_limit=deadline.left(floor=FLOOR_S),
                               mip_gap=options.mip_gap * INNER_GAP) if fractions is None else res
        bound = free.bound if free.status.has_plan else 0.0
    bound = min(bound, cost)
    status = certify(cost, bound, proven=res.status == Status.OPTIMAL, mip_gap=options.mip_gap).status
    extra = {}
    if current_counts is not None:
        extra["churn"] = {"cost_per_replica_started": options.churn_cost, "replicas_started": started,
                          "objective_per_hour": round(cost + options.churn_cost * started, 9),
                          "objective_lower_bound": res.bound}
        extra["changes"] = churn.diff_counts(current_counts, res.replicas)
    kw = dict(baseline=None, solver=solver)
    if fractions is not None:
        plan = make_partial_plan(problem, status.value, cost, bound, replicas, routes, fractions, extra=extra, **kw)
    else:
        plan = make_plan(problem, status.value, cost, bound, replicas, routes, **kw)
        plan.update(extra)
    sol = PlacementSolution(status=status, cost=cost, bound=bound, replicas=res.replicas, routes=res.routes,
                            nodes=(), fractions=fractions, started=started,
                            objective_bound=res.bound if h else None, method="node_milp")
    return plan, sol


def _say(options, msg):
    if options.progress:
        options.progress(msg)
