"""check_plan: the schema, C1, C2, C3, cost and bound checks of a plan (package docstring)."""
from __future__ import annotations

from dataclasses import dataclass, field

from gpumix.planner.checker.findings import ABS_TOL, REL_TOL, Finding, close, num, pos_int
from gpumix.planner.reading import quote
from gpumix.planner.checker.nodes import check_nodes
from gpumix.planner.checker.shared import check_shared
from gpumix.planner.precision import KV_CACHE_DTYPES, QUANTIZATIONS
from gpumix.planner.problem import Config, Problem, config_of


@dataclass
class _Tally:
    """What the replica groups (and shared groups) of a plan add up to."""

    served: dict[tuple, float] = field(default_factory=dict)  # (model, bucket) -> req/s routed
    used: dict[str, int] = field(default_factory=dict)  # gpu -> GPUs
    cost: float = 0.0  # sum of price x tp x count


def check_plan(plan: dict, problem: Problem, instances=None, sharing=None) -> list[Finding]:
    """Violations, one record each; empty when the plan is valid for the problem (and, for plans with
    `nodes`, for the instance list; without one, node shapes and prices are not checked). `sharing`
    (planner/sharing.SharingModel) is needed to check the memory of `shared` groups."""
    if not isinstance(plan, dict):
        return [Finding("schema", "plan", "must be a JSON object")]
    try:
        return _check(plan, problem, instances, sharing)
    except (TypeError, KeyError, AttributeError, ValueError, IndexError, OverflowError) as e:
        # the checks below test the types they rely on; this is the net for a shape they missed
        return [Finding("schema", "plan", f"malformed plan ({type(e).__name__}: {quote(str(e))})")]


def _check(plan: dict, problem: Problem, instances, sharing) -> list[Finding]:
    errs = _header(plan)
    groups = plan.get("replicas")
    if not isinstance(groups, list):
        return errs + [Finding("schema", "replicas", "missing or not a list")]
    tally = _Tally()
    seen: set = set()
    for i, g in enumerate(groups):
        errs += _check_group(f"replicas[{i}]", g, problem, tally, seen)
    if plan.get("shared") is not None:
        dedicated = {g.get("model") for g in groups if isinstance(g, dict) and isinstance(g.get("model"), str)}
        shared_errs, shared_cost = check_shared(plan, problem, sharing, tally.served, tally.used, dedicated)
        errs += shared_errs
        tally.cost += shared_cost
    fraction = _fractions(plan, problem, errs)
    errs += _demand_and_availability(problem, tally, fraction)
    if plan.get("nodes") is not None:
        errs += check_nodes(plan, problem, instances)
    elif num(plan.get("cost_per_hour")) and not close(plan["cost_per_hour"], tally.cost, 1e-9):
        errs.append(Finding("cost", "cost_per_hour", f"plan says {plan['cost_per_hour']:.6f}, "
                                                     f"sum of price x tp x count is {tally.cost:.6f}"))
    if num(plan.get("cost_per_hour")):
        lb = plan.get("lower_bound_per_hour")
        if num(lb) and lb > plan["cost_per_hour"] * (1 + 1e-9) + ABS_TOL:
            errs.append(Finding("bound", "lower_bound_per_hour",
                                f"{lb:.6f} exceeds cost_per_hour {plan['cost_per_hour']:.6f}"))
    return errs


def _header(plan: dict) -> list[Finding]:
    errs = []
    if plan.get("schema_version") != 1:
        errs.append(Finding("schema", "schema_version", f"expected 1, got {quote(plan.get('schema_version'))}"))
    if plan.get("status") not in ("optimal", "feasible"):
        errs.append(Finding("schema", "status", f"expected 'optimal' or 'feasible', got {quote(plan.get('status'))}"))
    for key, code in (("cost_per_hour", "cost"), ("lower_bound_per_hour", "bound")):
        if not num(plan.get(key)):
            errs.append(Finding(code, key, "missing or not a number"))
    return errs


def _check_group(w: str, g, problem: Problem, tally: _Tally, seen: set) -> list[Finding]:
    """One replica group: its schema, its routes (into tally.served) and C2; GPUs and cost into tally."""
    if not isinstance(g, dict):
        return [Finding("schema", w, "not an object")]
    model, gpu, tp, count = g.get("model"), g.get("gpu"), g.get("tp"), g.get("count")
    for key in ("model", "gpu"):
        if not isinstance(g.get(key), str):
            return [Finding("schema", f"{w}.{key}", f"must be a string, got {quote(g.get(key))}")]
    if g.get("spot") not in (None, True, False):
        return [Finding("schema", f"{w}.spot", f"must be true or false, got {quote(g.get('spot'))}")]
    if not pos_int(tp):
        return [Finding("schema", f"{w}.tp", f"must be a positive integer, got {quote(tp)}")]
    if not pos_int(count):
        return [Finding("schema", f"{w}.count", f"must be a positive integer, got {quote(count)}")]
    errs = []
    for key, allowed in (("quantization", QUANTIZATIONS), ("kv_cache_dtype", KV_CACHE_DTYPES)):
        if key in g and g[key] is not None and (not isinstance(g[key], str) or g[key] not in allowed):
            return [Finding("schema", f"{w}.{key}", f"must be one of {', '.join(allowed)}, got {quote(g[key])}")]
    c = config_of(g)
    if (c, g.get("spot")) in seen:
        errs.append(Finding("schema", w, f"second group for {c.label}"))
    seen.add((c, g.get("spot")))
    if model not in problem.buckets:
        return errs + [Finding("schema", f"{w}.model", f"{quote(model)} is not in the workload")]
    if gpu not in problem.price:
        return errs + [Finding("schema", f"{w}.gpu", f"{quote(gpu)} is not an allowed GPU type")]
    routes = g.get("routes")
    if not isinstance(routes, list):
        errs.append(Finding("schema", f"{w}.routes", "missing or not a list"))
        routes = []
    load = _routes(w, routes, problem, c, tally, errs)
    cap = count * problem.max_utilization
    if load > cap * (1 + REL_TOL) + ABS_TOL:
        errs.append(Finding("C2", w, f"C2 {model} on {count} x {gpu} TP{tp} is loaded {load:.6f} "
                                     f"replicas' worth > {cap:.6f} (count x max_utilization)"))
    tally.used[gpu] = tally.used.get(gpu, 0) + tp * count
    tally.cost += problem.price[gpu] * tp * count
    # the group's own figures, which exports and people read, must be the ones the cost is made of
    price = problem.price[gpu]
    for key, want in (("price_per_gpu_hour", price), ("cost_per_hour", price * tp * count), ("gpus", tp * count)):
        if key in g and not (num(g[key]) and close(g[key], want, 1e-9)):
            errs.append(Finding("cost" if key != "gpus" else "schema", f"{w}.{key}",
                                f"plan says {quote(g[key])}, the workload gives {want:.6g}"))
    return errs


def _routes(w: str, routes: list, problem: Problem, c: Config, tally: _Tally, errs: list[Finding]) -> float:
    """Adds a group's routes to tally.served; returns its load in replicas' worth (sum rps / mu)."""
    mu = problem.capacity.get(c, {})
    load = 0.0
    for j, r in enumerate(routes):
        rw = f"{w}.routes[{j}]"
        if not isinstance(r, dict):
            errs.append(Finding("schema", rw, "not an object"))
            continue
        k = (r.get("input_tokens"), r.get("output_tokens"))
        rps = r.get("rps")
        if not num(rps) or rps < 0:
            errs.append(Finding("schema", f"{rw}.rps", f"must be a number >= 0, got {quote(rps)}"))
            continue
        if not all(pos_int(t) for t in k):
            errs.append(Finding("schema", rw, f"input_tokens and output_tokens must be positive integers, "
                                              f"got {quote(k[0])} and {quote(k[1])}"))
            continue
        if k not in problem.buckets[c.model]:
            errs.append(Finding("schema", rw, f"bucket {k[0]}/{k[1]} is not a bucket of {c.model}"))
            continue
        if rps > 0 and k not in mu:
            errs.append(Finding("schema", rw, f"{c.label} cannot serve bucket {k[0]}/{k[1]}"))
            continue
        tally.served[(c.model, k)] = tally.served.get((c.model, k), 0.0) + rps
        if rps > 0:
            load += rps / mu[k]
    return load


def _demand_and_availability(problem: Problem, tally: _Tally, fraction: dict[str, float]) -> list[Finding]:
    errs = []
    for m in problem.models:
        for k in problem.buckets[m]:
            want, got = problem.demand[(m, k)] * fraction.get(m, 1.0), tally.served.get((m, k), 0.0)
            if not close(want, got):
                errs.append(Finding("C1", f"C1 {m} bucket {k[0]}/{k[1]}",
                                    f"routes carry {got:.6f} req/s, demand is {want:.6f}"))
    for g, n in sorted(tally.used.items()):
        avail = problem.available.get(g)
        if avail is not None and n > avail:
            errs.append(Finding("C3", f"C3 {g}", f"plan uses {n} GPUs, {avail} available"))
    return errs


def _fractions(plan: dict, problem: Problem, errs: list[Finding]) -> dict[str, float]:
    if not plan.get("partial"):
        return {}
    out = {}
    models = plan.get("models")
    for i, m in enumerate(models if isinstance(models, list) else []):
        f = m.get("served_fraction") if isinstance(m, dict) else None
        if not num(f) or not -ABS_TOL <= f <= 1 + ABS_TOL:
            errs.append(Finding("partial", f"models[{i}].served_fraction", f"must be a number in [0, 1], got {quote(f)}"))
            continue
        if not isinstance(m.get("name"), str):
            errs.append(Finding("partial", f"models[{i}].name", f"must be a string, got {quote(m.get('name'))}"))
            continue
        out[m.get("name")] = f
    for m in problem.models:
        if m not in out:
            errs.append(Finding("partial", "partial plan", f"no served_fraction for model {m!r}"))
    return out
