"""Independent plan checker: re-derives every constraint from the problem data, trusts nothing the
solver wrote except counts and routes. Every plan passes it before it is written.

Checks (labels as in planner/problem.py):
  schema  keys, types, status in {optimal, feasible}, count >= 1 integer, one group per config
  C1      routes of each (model, bucket) add up to its demand; no route to an unknown bucket
  C2      each group's load sum(rps / mu) <= count * U, with mu from the capacity table
  C3      GPUs used per type <= available
  cost    cost_per_hour = sum price * tp * count;  lower bound <= cost; gap consistent
"""
from __future__ import annotations

import math

from planner.problem import Config, Problem

REL_TOL = 1e-6
ABS_TOL = 1e-9


def _close(a: float, b: float, rel: float = REL_TOL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1.0) + ABS_TOL


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_plan(plan: dict, problem: Problem) -> list[str]:
    """Violations, one line each; empty when the plan is valid for the problem."""
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
        if c in seen:
            errs.append(f"{w}: second group for {model} on {gpu} TP{tp}")
        seen.add(c)
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

    for m in problem.models:
        for k in problem.buckets[m]:
            want, got = problem.demand[(m, k)], served.get((m, k), 0.0)
            if not _close(want, got):
                errs.append(f"C1 {m} bucket {k[0]}/{k[1]}: routes carry {got:.6f} req/s, demand is {want:.6f}")
    for g, n in sorted(used.items()):
        avail = problem.available.get(g)
        if avail is not None and n > avail:
            errs.append(f"C3 {g}: plan uses {n} GPUs, {avail} available")

    if _num(plan.get("cost_per_hour")):
        if not _close(plan["cost_per_hour"], cost, 1e-9):
            errs.append(f"cost_per_hour: plan says {plan['cost_per_hour']:.6f}, "
                        f"sum of price x tp x count is {cost:.6f}")
        lb = plan.get("lower_bound_per_hour")
        if _num(lb) and lb > plan["cost_per_hour"] * (1 + 1e-9) + ABS_TOL:
            errs.append(f"lower_bound_per_hour: {lb:.6f} exceeds cost_per_hour {plan['cost_per_hour']:.6f}")
    return errs
