"""check_nodes: a plan's `nodes` against the instance list, and its spot and spare-node promises."""
from __future__ import annotations

from dataclasses import dataclass, field

from gpumix.planner.checker.findings import ABS_TOL, REL_TOL, Finding, close, num, pos_int
from gpumix.planner.reading import quote
from gpumix.planner.problem import Config, Problem, config_of


@dataclass
class _Placed:
    """What the nodes of a plan hold."""

    counts: dict[tuple, int] = field(default_factory=dict)  # (config, spot) -> replicas on all nodes
    per_node: dict[tuple, list[int]] = field(default_factory=dict)  # (config, spot) -> replicas on each node
    per_type: dict[tuple, int] = field(default_factory=dict)  # (instance, region) -> nodes
    sets: dict[int, int] = field(default_factory=dict)  # shared group -> sets on nodes
    cost: float = 0.0  # sum of node prices


def check_nodes(plan: dict, problem: Problem, instances=None) -> list[Finding]:
    """The node checks of the package docstring."""
    nodes = plan["nodes"]
    if not isinstance(nodes, list):
        return [Finding("nodes", "nodes", "not a list")]
    if not isinstance(plan.get("shared") or [], list):
        return [Finding("nodes", "shared", "not a list")]
    by_key = None if instances is None else {(i.name, i.region): i for i in instances}
    shared_groups = [g if isinstance(g, dict) else {} for g in plan.get("shared") or []]
    placed, errs = _Placed(), []
    for j, nd in enumerate(nodes):
        errs += _check_node(f"nodes[{j}]", nd, by_key, shared_groups, placed)
    if by_key is not None:
        for key, k in sorted(placed.per_type.items()):
            a = by_key[key].available
            if a is not None and k > a:
                errs.append(Finding("nodes", "nodes", f"{k} x {key[0]} in {quote(key[1])}, {a} available"))
    groups = {}
    for g in plan.get("replicas") or []:
        if isinstance(g, dict) and isinstance(g.get("tp"), int) and _config_keys_ok(g):
            groups[(config_of(g), bool(g.get("spot")))] = g
    for c in sorted(set(groups) | set(placed.counts), key=str):
        want = groups[c].get("count") if c in groups else 0
        if placed.counts.get(c, 0) != want:
            errs.append(Finding("nodes", "nodes", f"{placed.counts.get(c, 0)} replicas of {c[0].model} on "
                                                  f"{c[0].gpu} TP{c[0].tp}{' (spot)' if c[1] else ''} placed, "
                                                  f"the group says {want}"))
    for i, grp in enumerate(shared_groups):
        if placed.sets.get(i, 0) != grp.get("count"):
            errs.append(Finding("nodes", "nodes", f"{placed.sets.get(i, 0)} sets of shared[{i}] placed, "
                                                  f"the group says {grp.get('count')}"))
    if num(plan.get("cost_per_hour")) and not close(plan["cost_per_hour"], placed.cost, 1e-9):
        errs.append(Finding("cost", "cost_per_hour", f"plan says {plan['cost_per_hour']:.6f}, "
                                                     f"sum of node prices is {placed.cost:.6f}"))
    errs += _check_spot(plan, problem, groups)
    errs += _check_spare(plan, problem, groups, placed.per_node)
    return errs


def _check_node(w: str, nd, by_key, shared_groups: list[dict], placed: _Placed) -> list[Finding]:
    """One node: its shape and price against the instance list, its TP groups and shared sets."""
    if not isinstance(nd, dict):
        return [Finding("nodes", w, "not an object")]
    size, gpu, price, spot = nd.get("gpus"), nd.get("gpu"), nd.get("price_per_hour"), bool(nd.get("spot"))
    if not pos_int(size) or not num(price):
        return [Finding("nodes", w, "gpus must be a positive integer and price_per_hour a number")]
    errs = []
    key = (nd.get("instance"), nd.get("region", ""))
    if not isinstance(key[0], str) or not isinstance(key[1], str) or not isinstance(gpu, str):
        return [Finding("nodes", w, "instance, region and gpu must be strings")]
    for part in ("replicas", "shared"):
        if not isinstance(nd.get(part) or [], list):
            return [Finding("nodes", f"{w}.{part}", f"must be a list, got {quote(nd.get(part))}")]
    if by_key is not None:
        inst = by_key.get(key)
        if inst is None:
            return [Finding("nodes", w, f"instance {quote(key[0])} in region {quote(key[1])} is not offered")]
        want = inst.spot_price_per_hour if spot else inst.price_per_hour
        if want is None:
            errs.append(Finding("nodes", w, f"{key[0]} has no spot price"))
        elif (inst.gpu, inst.gpus) != (gpu, size) or not close(price, want, 1e-12):
            errs.append(Finding("nodes", w, f"{key[0]} is {inst.gpus} x {inst.gpu} at ${want}/h, plan says "
                                            f"{size} x {gpu} at ${price}/h"))
        placed.per_type[key] = placed.per_type.get(key, 0) + 1
    placed.cost += price
    taken: set[int] = set()
    mine: dict[tuple, int] = {}
    for r_i, r in enumerate(nd.get("replicas") or []):
        if not isinstance(r, dict) or not _config_keys_ok(r):
            errs.append(Finding("nodes", f"{w}.replicas[{r_i}]", "must be an object with a string model"))
            continue
        if not _gpu_ids_ok(r, size, taken, f"{w}.replicas[{r_i}]", errs):
            continue
        c = (config_of({**r, "gpu": gpu}), spot)
        placed.counts[c] = placed.counts.get(c, 0) + 1
        mine[c] = mine.get(c, 0) + 1
    for s_i, r in enumerate(nd.get("shared") or []):
        sw = f"{w}.shared[{s_i}]"
        i = r.get("group") if isinstance(r, dict) else None
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(shared_groups):
            errs.append(Finding("nodes", sw, f"group must index the plan's `shared` list, got {quote(i)}"))
            continue
        grp = shared_groups[i]
        if (grp.get("gpu"), grp.get("tp")) != (gpu, r.get("tp")):
            errs.append(Finding("nodes", sw, f"shared[{i}] is TP{grp.get('tp')} on {grp.get('gpu')}, the node "
                                             f"holds TP{r.get('tp')} on {gpu}"))
            continue
        if _gpu_ids_ok(r, size, taken, sw, errs):
            placed.sets[i] = placed.sets.get(i, 0) + 1
    for c, k in mine.items():
        placed.per_node.setdefault(c, []).append(k)
    return errs


def _gpu_ids_ok(r, size: int, taken: set[int], where: str, errs: list[Finding]) -> bool:
    """A TP group's gpu_ids: tp distinct GPUs of the node, none taken by another group (taken grows)."""
    ids, tp = (r.get("gpu_ids"), r.get("tp")) if isinstance(r, dict) else (None, None)
    if not isinstance(ids, list) or not isinstance(tp, int) or len(ids) != tp or len(set(ids)) != tp:
        errs.append(Finding("nodes", where, "gpu_ids must list tp distinct GPUs (TP group inside one node)"))
        return False
    if any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < size for i in ids):
        errs.append(Finding("nodes", where, f"gpu_ids {quote(ids)} outside the node's {size} GPUs"))
        return False
    if taken & set(ids):
        errs.append(Finding("nodes", where, f"GPUs {sorted(taken & set(ids))} already used on this node"))
    taken |= set(ids)
    return True


def _load(problem: Problem, g: dict, c: Config) -> float:
    mu = problem.capacity.get(c, {})
    return sum(r["rps"] / mu[(r["input_tokens"], r["output_tokens"])] for r in _routes(g)
               if num(r.get("rps")) and r["rps"] > 0 and (r.get("input_tokens"), r.get("output_tokens")) in mu)


def _routes(g: dict) -> list[dict]:
    """A group's routes that are objects with integer buckets (check_plan reports the others)."""
    routes = g.get("routes")
    return [r for r in routes if isinstance(r, dict) and pos_int(r.get("input_tokens"))
            and pos_int(r.get("output_tokens"))] if isinstance(routes, list) else []


def _config_keys_ok(g: dict) -> bool:
    """The keys config_of hashes are strings or absent (a list there would not hash)."""
    return isinstance(g.get("model"), str) and isinstance(g.get("gpu", ""), str) and all(
        g.get(k) is None or isinstance(g.get(k), str) for k in ("quantization", "kv_cache_dtype"))


def _check_spot(plan: dict, problem: Problem, groups: dict) -> list[Finding]:
    share = plan.get("spot_share")
    on_spot: dict[str, float] = {}
    for (c, spot), g in groups.items():
        if spot:
            on_spot[c.model] = on_spot.get(c.model, 0.0) + sum(r["rps"] for r in _routes(g) if num(r.get("rps")))
    if not on_spot:
        return []
    if not num(share):
        return [Finding("spot", "spot_share", "the plan runs replicas on spot nodes but states no spot_share")]
    errs = []
    for m, rps in sorted(on_spot.items()):
        total = sum(problem.demand[(m, k)] for k in problem.buckets.get(m, ()))
        if rps > share * total * (1 + REL_TOL) + ABS_TOL:
            errs.append(Finding("spot", f"spot {m}", f"{rps:.6f} req/s on spot nodes > spot_share {share} x {total:.6f}"))
    return errs


def _check_spare(plan: dict, problem: Problem, groups: dict, per_node: dict) -> list[Finding]:
    """After losing any N nodes, each group's remaining replicas still carry its routes (checked
    without re-routing, a stricter test than 'demand can still be met')."""
    n = plan.get("spare_nodes") or 0
    if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
        return []
    errs = []
    for (c, spot), g in sorted(groups.items(), key=lambda kv: str(kv[0])):
        worst = sum(sorted(per_node.get((c, spot), []), reverse=True)[:n])
        left = (g.get("count") if pos_int(g.get("count")) else 0) - worst
        load = _load(problem, g, c)
        if load > left * problem.max_utilization * (1 + REL_TOL) + ABS_TOL:
            errs.append(Finding("spare", f"spare_nodes {n}", f"losing the {n} nodes with most {c.model} on {c.gpu} "
                                                             f"TP{c.tp} leaves {left} replicas for {load:.6f} "
                                                             f"replicas' worth of load"))
    return errs
