"""Neighbourhood search on the node-granular model: re-plan a few models at a time, the rest fixed.

The node MILP of all models at once (solvers/stage2/node_milp.py) is slow to find good plans at 50-200
models: its search is spread over every model's integrality. Node rounding, where a stage-1 plan
loses money on instances, is local: a GPU type's last node is part empty, and a few models that
could use that type fill it for free. So, from a plan:

  repeat until the time is up or IDLE_ROUNDS rounds in a row find nothing:
    for each GPU type g, most per-GPU-priced capacity in use first:
      B = up to USERS models that use g now and others that have a config on g, BLOCK in all
          (a deterministic pseudo-random pick, seeded)
      solve node_milp's model for B alone, with every other model's TP groups fixed in C6
        (`background`), so its objective is the node price of the whole plan
      keep B's new replicas and routes if that price went down

Every accepted step is a plan of the node model (C6 is exact for 1/4/8-GPU nodes with TP 1/2/4/8
and a relaxation of packing otherwise, so stage 2 packs the result and its own price is what counts).
This finds plans; it proves nothing: the bound stays what stage 1 and the node MILP proved.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from gpumix.planner.problem import Problem
from gpumix.solvers.highs import run_highs
from gpumix.solvers.result import Deadline
from gpumix.solvers.stage2.node_milp import NodeModel, clean

BLOCK = 8  # models re-planned together: up to USERS that use the GPU type, the rest could
USERS = 3
STEP_S = 1.0  # HiGHS limit of one step
PRICE_S = 5.0  # HiGHS limit of pricing a fixed plan's nodes
IDLE_ROUNDS = 3  # rounds in a row without a better plan before it stops


@dataclass(frozen=True)
class NodeSearchResult:
    replicas: dict  # (config, spot=False) -> replicas
    routes: dict  # ((config, spot), bucket) -> req/s
    price: float  # C6 node price of the plan
    steps: int  # improving steps accepted


def node_price(problem: Problem, instances, replicas: dict, time_limit: float | None = PRICE_S) -> float:
    """The C6 node price of a plan (the cheapest instance mix whose TP-size tiers hold its groups):
    node_milp's model with every replica fixed and no model left to plan."""
    mdl = NodeModel(problem.restrict(models=set()), instances, 0.0, None, 0.0, False,
                    background=_groups(replicas, set()))
    res = run_highs(mdl.prob, time_limit, 1e-9)
    return res.objective if res.status.has_plan and res.objective is not None else float("inf")


def _groups(replicas: dict, skip: set) -> dict:
    """{(gpu, spot): {tp: groups}} of the replicas of models not in skip."""
    out: dict = {}
    for (c, v), k in replicas.items():
        if c.model not in skip and k > 0:
            per = out.setdefault((c.gpu, v), {})
            per[c.tp] = per.get(c.tp, 0) + k
    return out


def improve(problem: Problem, instances, replicas: dict, routes: dict, deadline: Deadline | None,
            model_bounds: dict | None = None, seed: int = 0, say=None) -> NodeSearchResult:
    """A better plan (or the same) from a plan keyed by (config, spot=False)."""
    deadline = deadline or Deadline()
    rng = random.Random(seed)
    price = node_price(problem, instances, replicas, deadline.left(cap=PRICE_S, floor=0.05))
    on_type: dict[str, list[str]] = {}
    for c in problem.configs:
        if c.model not in on_type.setdefault(c.gpu, []):
            on_type[c.gpu].append(c.model)
    cheapest = {g: min(i.price_per_hour / i.gpus for i in instances if i.gpu == g and i.available != 0)
                for g in on_type if any(i.gpu == g and i.available != 0 for i in instances)}
    accepted, idle = 0, 0
    while not deadline.expired() and idle < IDLE_ROUNDS:
        better = False
        used: dict[str, int] = {}
        for (c, _v), k in replicas.items():
            used[c.gpu] = used.get(c.gpu, 0) + c.tp * k
        # every type whose models can move, most per-GPU-priced capacity in use first
        order = sorted((g for g in cheapest if len(on_type.get(g, ())) > 1),
                       key=lambda g: (-cheapest[g] * used.get(g, 0), g))
        for g in order:
            if deadline.expired():
                break
            users = sorted({c.model for (c, _v), k in replicas.items() if c.gpu == g and k > 0})
            others = [m for m in on_type[g] if m not in set(users)]
            block = set(rng.sample(users, min(USERS, len(users))))
            block |= set(rng.sample(others, min(BLOCK - len(block), len(others))))
            sub = problem.restrict(models=block)
            mdl = NodeModel(sub, instances, 0.0, None, 0.0, False,
                            model_bounds={m: b for m, b in (model_bounds or {}).items() if m in block},
                            background=_groups(replicas, block))
            left = deadline.left(cap=STEP_S)
            if left <= 0.05:
                break
            res = run_highs(mdl.prob, left, 1e-6)
            obj = res.objective
            if not res.status.has_plan or obj is None or obj >= price - 1e-6:
                continue
            reps = {it: int(round(v.varValue or 0)) for it, v in mdl.n.items()}
            rts = {key: max(v.varValue or 0.0, 0.0) for key, v in mdl.x.items()}
            reps, rts = clean(sub, reps, rts, None)
            replicas = {it: k for it, k in replicas.items() if it[0].model not in block}
            replicas.update(reps)
            routes = {key: v for key, v in routes.items() if key[0][0].model not in block}
            routes.update(rts)
            price, better, accepted = obj, True, accepted + 1
            if say:
                say(f"node search: ${price:,.2f}/h ({', '.join(sorted(block))[:60]}...)")
        idle = 0 if better else idle + 1
    return NodeSearchResult(dict(sorted(replicas.items())), dict(sorted(routes.items())), price, accepted)
