"""Independent plan checker: re-derives every constraint from the problem data, trusts nothing the
solver wrote except counts and routes. Every plan passes it before it is written.

Checks (labels as in planner/problem.py):
  schema  keys, types, status in {optimal, feasible}, count >= 1 integer, one group per config
  C1      routes of each (model, bucket) add up to its demand; no route to an unknown bucket
  C2      each group's load sum(rps / mu) <= count * U, with mu from the capacity table
  C3      GPUs used per type <= available
  cost    cost_per_hour = sum price * tp * count;  lower bound <= cost; gap consistent
  nodes   (plans with `nodes`, check_nodes) TP groups inside one node on distinct GPU ids of the node's
          type, node shapes and prices as the instance list says, nodes per instance type <= available,
          node replicas = group counts, sets of each shared group on nodes = its count (each set a TP
          group of the group's GPU type inside one node), cost_per_hour = sum of node prices, spot
          share, spare nodes
  partial (plans with `partial`) C1 against served_fraction x demand, 0 <= served_fraction <= 1
  shared  (plans with `shared`, planner/sharing.check_shared) S1 a shared model in one group and on no
          dedicated replica, S2 time sum_m f_m <= count x U, S3 memory per GPU within the GPU's budget,
          S4 the members' least decode steps within every member's TPOT SLO;
          their routes count in C1, their GPUs in C3, their price x tp x count in cost
"""
from __future__ import annotations

import math

from gpumix.planner.problem import Config, Problem

REL_TOL = 1e-6
ABS_TOL = 1e-9


def _close(a: float, b: float, rel: float = REL_TOL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1.0) + ABS_TOL


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_plan(plan: dict, problem: Problem, instances=None, sharing=None) -> list[str]:
    """Violations, one line each; empty when the plan is valid for the problem (and, for plans with
    `nodes`, for the instance list; without one, node shapes and prices are not checked). `sharing`
    (planner/sharing.SharingModel) is needed to check the memory of `shared` groups."""
    errs: list[str] = []
    if not isinstance(plan, dict):
        return ["plan: must be a JSON object"]
    if plan.get("schema_version") != 1:
        errs.append(f"schema_version: expected 1, got {plan.get('schema_version')!r}")
    if plan.get("status") not in ("optimal", "feasible"):
        errs.append(f"status: expected 'optimal' or 'feasible', got {plan.get('status')!r}")
    for key in ("cost_per_hour", "lower_bound_per_hour"):
        if not _num(plan.get(key)):
            errs.append(f"{key}: missing or not a number")
    groups = plan.get("replicas")
    if not isinstance(groups, list):
        return errs + ["replicas: missing or not a list"]

    served: dict[tuple, float] = {}
    used: dict[str, int] = {}
    cost = 0.0
    seen: set[Config] = set()
    for i, g in enumerate(groups):
        w = f"replicas[{i}]"
        if not isinstance(g, dict):
            errs.append(f"{w}: not an object")
            continue
        model, gpu, tp, count = g.get("model"), g.get("gpu"), g.get("tp"), g.get("count")
        if not isinstance(tp, int) or isinstance(tp, bool) or tp < 1:
            errs.append(f"{w}.tp: must be a positive integer, got {tp!r}")
            continue
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            errs.append(f"{w}.count: must be a positive integer, got {count!r}")
            continue
        c = Config(model, gpu, tp)
        if (c, g.get("spot")) in seen:
            errs.append(f"{w}: second group for {model} on {gpu} TP{tp}")
        seen.add((c, g.get("spot")))
        if model not in problem.buckets:
            errs.append(f"{w}.model: {model!r} is not in the workload")
            continue
        if gpu not in problem.price:
            errs.append(f"{w}.gpu: {gpu!r} is not an allowed GPU type")
            continue
        mu = problem.capacity.get(c, {})
        load = 0.0
        routes = g.get("routes")
        if not isinstance(routes, list):
            errs.append(f"{w}.routes: missing or not a list")
            routes = []
        for j, r in enumerate(routes):
            rw = f"{w}.routes[{j}]"
            if not isinstance(r, dict):
                errs.append(f"{rw}: not an object")
                continue
            k = (r.get("input_tokens"), r.get("output_tokens"))
            rps = r.get("rps")
            if not _num(rps) or rps < 0:
                errs.append(f"{rw}.rps: must be a number >= 0, got {rps!r}")
                continue
            if k not in problem.buckets[model]:
                errs.append(f"{rw}: bucket {k[0]}/{k[1]} is not a bucket of {model}")
                continue
            if rps > 0 and k not in mu:
                errs.append(f"{rw}: {model} on {gpu} TP{tp} cannot serve bucket {k[0]}/{k[1]}")
                continue
            served[(model, k)] = served.get((model, k), 0.0) + rps
            if rps > 0:
                load += rps / mu[k]
        cap = count * problem.max_utilization
        if load > cap * (1 + REL_TOL) + ABS_TOL:
            errs.append(f"{w}: C2 {model} on {count} x {gpu} TP{tp} is loaded {load:.6f} "
                        f"replicas' worth > {cap:.6f} (count x max_utilization)")
        used[gpu] = used.get(gpu, 0) + tp * count
        cost += problem.price[gpu] * tp * count

    if plan.get("shared") is not None:
        from gpumix.planner.sharing import check_shared
        dedicated = {g.get("model") for g in groups if isinstance(g, dict)}
        shared_errs, shared_cost = check_shared(plan, problem, sharing, served, used, dedicated)
        errs += shared_errs
        cost += shared_cost
    fraction = _fractions(plan, problem, errs)
    for m in problem.models:
        for k in problem.buckets[m]:
            want, got = problem.demand[(m, k)] * fraction.get(m, 1.0), served.get((m, k), 0.0)
            if not _close(want, got):
                errs.append(f"C1 {m} bucket {k[0]}/{k[1]}: routes carry {got:.6f} req/s, demand is {want:.6f}")
    for g, n in sorted(used.items()):
        avail = problem.available.get(g)
        if avail is not None and n > avail:
            errs.append(f"C3 {g}: plan uses {n} GPUs, {avail} available")

    if plan.get("nodes") is not None:
        errs += check_nodes(plan, problem, instances)
    elif _num(plan.get("cost_per_hour")):
        if not _close(plan["cost_per_hour"], cost, 1e-9):
            errs.append(f"cost_per_hour: plan says {plan['cost_per_hour']:.6f}, "
                        f"sum of price x tp x count is {cost:.6f}")
    if _num(plan.get("cost_per_hour")):
        lb = plan.get("lower_bound_per_hour")
        if _num(lb) and lb > plan["cost_per_hour"] * (1 + 1e-9) + ABS_TOL:
            errs.append(f"lower_bound_per_hour: {lb:.6f} exceeds cost_per_hour {plan['cost_per_hour']:.6f}")
    return errs


def _fractions(plan: dict, problem: Problem, errs: list[str]) -> dict[str, float]:
    if not plan.get("partial"):
        return {}
    out = {}
    for i, m in enumerate(plan.get("models") or []):
        f = m.get("served_fraction") if isinstance(m, dict) else None
        if not _num(f) or not -ABS_TOL <= f <= 1 + ABS_TOL:
            errs.append(f"models[{i}].served_fraction: must be a number in [0, 1], got {f!r}")
            continue
        out[m.get("name")] = f
    for m in problem.models:
        if m not in out:
            errs.append(f"partial plan: no served_fraction for model {m!r}")
    return out


def check_nodes(plan: dict, problem: Problem, instances=None) -> list[str]:
    """The node checks of the module docstring."""
    errs: list[str] = []
    nodes = plan["nodes"]
    if not isinstance(nodes, list):
        return ["nodes: not a list"]
    by_key = None if instances is None else {(i.name, i.region): i for i in instances}
    counts: dict[tuple, int] = {}
    per_node: dict[tuple, list[int]] = {}  # (config, spot) -> replicas on each node
    per_type: dict[tuple, int] = {}
    shared_groups = [g if isinstance(g, dict) else {} for g in plan.get("shared") or []]
    sets_placed: dict[int, int] = {}  # shared group -> sets on nodes
    cost = 0.0
    for j, nd in enumerate(nodes):
        w = f"nodes[{j}]"
        if not isinstance(nd, dict):
            errs.append(f"{w}: not an object")
            continue
        size, gpu, price, spot = nd.get("gpus"), nd.get("gpu"), nd.get("price_per_hour"), bool(nd.get("spot"))
        if not isinstance(size, int) or isinstance(size, bool) or size < 1 or not _num(price):
            errs.append(f"{w}: gpus must be a positive integer and price_per_hour a number")
            continue
        key = (nd.get("instance"), nd.get("region", ""))
        if by_key is not None:
            inst = by_key.get(key)
            if inst is None:
                errs.append(f"{w}: instance {key[0]!r} in region {key[1]!r} is not offered")
                continue
            want = inst.spot_price_per_hour if spot else inst.price_per_hour
            if want is None:
                errs.append(f"{w}: {key[0]} has no spot price")
            elif (inst.gpu, inst.gpus) != (gpu, size) or not _close(price, want, 1e-12):
                errs.append(f"{w}: {key[0]} is {inst.gpus} x {inst.gpu} at ${want}/h, plan says "
                            f"{size} x {gpu} at ${price}/h")
            per_type[key] = per_type.get(key, 0) + 1
        cost += price
        taken: set[int] = set()
        mine: dict[tuple, int] = {}
        for r_i, r in enumerate(nd.get("replicas") or []):
            rw = f"{w}.replicas[{r_i}]"
            if not _gpu_ids_ok(r, size, taken, rw, errs):
                continue
            c = (Config(r.get("model"), gpu, r["tp"]), spot)
            counts[c] = counts.get(c, 0) + 1
            mine[c] = mine.get(c, 0) + 1
        for s_i, r in enumerate(nd.get("shared") or []):
            sw = f"{w}.shared[{s_i}]"
            i = r.get("group") if isinstance(r, dict) else None
            if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(shared_groups):
                errs.append(f"{sw}: group must index the plan's `shared` list, got {i!r}")
                continue
            grp = shared_groups[i]
            if (grp.get("gpu"), grp.get("tp")) != (gpu, r.get("tp")):
                errs.append(f"{sw}: shared[{i}] is TP{grp.get('tp')} on {grp.get('gpu')}, the node holds "
                            f"TP{r.get('tp')} on {gpu}")
                continue
            if _gpu_ids_ok(r, size, taken, sw, errs):
                sets_placed[i] = sets_placed.get(i, 0) + 1
        for c, k in mine.items():
            per_node.setdefault(c, []).append(k)
    if by_key is not None:
        for key, k in sorted(per_type.items()):
            a = by_key[key].available
            if a is not None and k > a:
                errs.append(f"nodes: {k} x {key[0]} in {key[1]!r}, {a} available")
    groups = {}
    for g in plan.get("replicas") or []:
        if isinstance(g, dict) and isinstance(g.get("tp"), int):
            groups[(Config(g.get("model"), g.get("gpu"), g["tp"]), bool(g.get("spot")))] = g
    for c in sorted(set(groups) | set(counts), key=str):
        want = groups[c].get("count") if c in groups else 0
        if counts.get(c, 0) != want:
            errs.append(f"nodes: {counts.get(c, 0)} replicas of {c[0].model} on {c[0].gpu} TP{c[0].tp}"
                        f"{' (spot)' if c[1] else ''} placed, the group says {want}")
    for i, grp in enumerate(shared_groups):
        if sets_placed.get(i, 0) != grp.get("count"):
            errs.append(f"nodes: {sets_placed.get(i, 0)} sets of shared[{i}] placed, the group says {grp.get('count')}")
    if _num(plan.get("cost_per_hour")) and not _close(plan["cost_per_hour"], cost, 1e-9):
        errs.append(f"cost_per_hour: plan says {plan['cost_per_hour']:.6f}, sum of node prices is {cost:.6f}")
    errs += _check_spot(plan, problem, groups)
    errs += _check_spare(plan, problem, groups, per_node)
    return errs


def _gpu_ids_ok(r, size: int, taken: set[int], where: str, errs: list[str]) -> bool:
    """A TP group's gpu_ids: tp distinct GPUs of the node, none taken by another group (taken grows)."""
    ids, tp = (r.get("gpu_ids"), r.get("tp")) if isinstance(r, dict) else (None, None)
    if not isinstance(ids, list) or not isinstance(tp, int) or len(ids) != tp or len(set(ids)) != tp:
        errs.append(f"{where}: gpu_ids must list tp distinct GPUs (TP group inside one node)")
        return False
    if any(not isinstance(i, int) or not 0 <= i < size for i in ids):
        errs.append(f"{where}: gpu_ids {ids} outside the node's {size} GPUs")
        return False
    if taken & set(ids):
        errs.append(f"{where}: GPUs {sorted(taken & set(ids))} already used on this node")
    taken |= set(ids)
    return True


def _load(problem: Problem, g: dict, c: Config) -> float:
    mu = problem.capacity.get(c, {})
    return sum(r["rps"] / mu[(r["input_tokens"], r["output_tokens"])] for r in g.get("routes") or []
               if _num(r.get("rps")) and r["rps"] > 0 and (r.get("input_tokens"), r.get("output_tokens")) in mu)


def _check_spot(plan: dict, problem: Problem, groups: dict) -> list[str]:
    share = plan.get("spot_share")
    on_spot: dict[str, float] = {}
    for (c, spot), g in groups.items():
        if spot:
            on_spot[c.model] = on_spot.get(c.model, 0.0) + sum(r.get("rps", 0) for r in g.get("routes") or [])
    if not on_spot:
        return []
    if not _num(share):
        return ["spot_share: the plan runs replicas on spot nodes but states no spot_share"]
    errs = []
    for m, rps in sorted(on_spot.items()):
        total = sum(problem.demand[(m, k)] for k in problem.buckets.get(m, ()))
        if rps > share * total * (1 + REL_TOL) + ABS_TOL:
            errs.append(f"spot {m}: {rps:.6f} req/s on spot nodes > spot_share {share} x {total:.6f}")
    return errs


def _check_spare(plan: dict, problem: Problem, groups: dict, per_node: dict) -> list[str]:
    """After losing any N nodes, each group's remaining replicas still carry its routes (checked
    without re-routing, a stricter test than 'demand can still be met')."""
    n = plan.get("spare_nodes") or 0
    if not isinstance(n, int) or n <= 0:
        return []
    errs = []
    for (c, spot), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        worst = sum(sorted(per_node.get((c, spot), []), reverse=True)[:n])
        left = (g.get("count") or 0) - worst
        load = _load(problem, g, c)
        if load > left * problem.max_utilization * (1 + REL_TOL) + ABS_TOL:
            errs.append(f"spare_nodes {n}: losing the {n} nodes with most {c.model} on {c.gpu} TP{c.tp} leaves "
                        f"{left} replicas for {load:.6f} replicas' worth of load")
    return errs
