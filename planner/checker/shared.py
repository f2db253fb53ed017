"""check_shared: the S1-S4 checks of a plan's `shared` groups (planner/sharing.py has the model)."""
from __future__ import annotations

from gpumix.planner.checker.findings import ABS_TOL, REL_TOL, Finding, num, pos_int
from gpumix.planner.reading import quote
from gpumix.planner.problem import BucketKey, Config, Problem, config_of
from gpumix.planner.roofline import GB
from gpumix.planner.sharing import SharingModel, latency_ok, memory_per_gpu, time_fraction


def check_shared(plan: dict, problem: Problem, sharing: SharingModel | None, served: dict,
                 used: dict, dedicated: set) -> tuple[list[Finding], float]:
    """The checks of plan["shared"]: S1 each shared model in exactly one group and on no dedicated
    replica, S2 time sum f_m <= count * U, S3 memory per GPU <= budget, S4 latency (the members'
    least decode steps within every member's TPOT SLO). Adds the groups' routes to `served` and GPUs
    to `used`; returns (findings, cost per hour)."""
    groups = plan.get("shared")
    if not isinstance(groups, list):
        return [Finding("schema", "shared", "not a list")], 0.0
    if groups and sharing is None:
        return [Finding("schema", "shared", "memory cannot be checked without the workload's model shapes")], 0.0
    errs: list[Finding] = []
    cost = 0.0
    hosted: dict[str, int] = {}
    for i, g in enumerate(groups):
        w = f"shared[{i}]"
        if not isinstance(g, dict):
            errs.append(Finding("schema", w, "not an object"))
            continue
        gpu, tp, count, models = g.get("gpu"), g.get("tp"), g.get("count"), g.get("models")
        if not pos_int(tp) or not pos_int(count):
            errs.append(Finding("schema", w, "tp and count must be positive integers"))
            continue
        if not isinstance(gpu, str) or gpu not in problem.price:
            errs.append(Finding("schema", f"{w}.gpu", f"{quote(gpu)} is not an allowed GPU type"))
            continue
        if not isinstance(models, list) or not models:
            errs.append(Finding("schema", f"{w}.models", "missing or empty"))
            continue
        errs += _check_group(w, gpu, tp, count, models, problem, sharing, served, hosted)
        used[gpu] = used.get(gpu, 0) + tp * count
        cost += problem.price[gpu] * tp * count
    for m, n in sorted(hosted.items()):
        if n > 1:
            errs.append(Finding("S1", f"S1 {m}", f"in {n} shared groups (a shared model lives in exactly one)"))
        if m in dedicated:
            errs.append(Finding("S1", f"S1 {m}", "both in a shared group and on dedicated replicas"))
    return errs, cost


def _check_group(w: str, gpu: str, tp: int, count: int, models: list, problem: Problem, sharing: SharingModel,
                 served: dict, hosted: dict[str, int]) -> list[Finding]:
    """S2, S3 and S4 for one group whose header is valid; its members' routes go into `served`."""
    errs: list[Finding] = []
    busy, mem, fps = 0.0, 0.0, []
    for j, entry in enumerate(models):
        mw = f"{w}.models[{j}]"
        m = entry.get("model") if isinstance(entry, dict) else None
        if not isinstance(m, str) or m not in problem.buckets:
            errs.append(Finding("schema", f"{mw}.model", f"{quote(m)} is not in the workload"))
            continue
        hosted[m] = hosted.get(m, 0) + 1
        if not all(entry.get(k) is None or isinstance(entry.get(k), str) for k in ("quantization", "kv_cache_dtype")):
            errs.append(Finding("schema", mw, "quantization and kv_cache_dtype must be strings"))
            continue
        c = config_of({**entry, "gpu": gpu, "tp": tp})
        fp = sharing.footprint.get(c)
        if fp is None:
            errs.append(Finding("S3", mw, f"{m} on {gpu} TP{tp} has no memory footprint "
                                          f"({sharing.why_not.get(m, 'no capacity or memory data')})"))
            continue
        rps = _member_routes(mw, entry, problem, c, served, errs)
        busy += time_fraction(problem, c, rps)
        mem += memory_per_gpu(fp, rps, count)
        fps.append((m, fp))
    if not latency_ok(fp for _, fp in fps):
        steps = " + ".join(f"{m} {fp.step_s * 1e3:.1f}" for m, fp in fps)
        tight = min(fps, key=lambda x: x[1].tpot_s)
        errs.append(Finding("S4", w, f"S4 latency: the members' decode steps add up to {steps} ms > {tight[0]}'s "
                                     f"TPOT SLO {tight[1].tpot_s * 1e3:g} ms (they step in turn)"))
    cap = count * problem.max_utilization
    if busy > cap * (1 + REL_TOL) + ABS_TOL:
        errs.append(Finding("S2", w, f"S2 time: the models keep {count} x {gpu} TP{tp} busy {busy:.6f} sets' worth "
                                     f"> {cap:.6f} (count x max_utilization)"))
    budget = sharing.budget.get(gpu)
    if budget is None:
        errs.append(Finding("S3", w, f"S3 memory: {gpu} has no known memory size"))
    elif mem > budget * (1 + REL_TOL):
        errs.append(Finding("S3", w, f"S3 memory: {mem / GB:.2f} GB per GPU of weights, activations and KV cache "
                                     f"> {budget / GB:.2f} GB usable on {gpu}"))
    return errs


def _member_routes(mw: str, entry: dict, problem: Problem, c: Config, served: dict,
                   errs: list[Finding]) -> dict[BucketKey, float]:
    rps: dict[BucketKey, float] = {}
    routes = entry.get("routes")
    for r_i, r in enumerate(routes if isinstance(routes, list) else []):
        k = (r.get("input_tokens"), r.get("output_tokens")) if isinstance(r, dict) else None
        v = r.get("rps") if isinstance(r, dict) else None
        if k is None or not all(pos_int(t) for t in k) or not num(v) or not v >= 0:
            errs.append(Finding("schema", f"{mw}.routes[{r_i}]", "needs input_tokens, output_tokens and rps >= 0"))
            continue
        if k not in problem.buckets[c.model]:
            errs.append(Finding("schema", f"{mw}.routes[{r_i}]", f"bucket {k[0]}/{k[1]} is not a bucket of {c.model}"))
            continue
        if v > 0 and k not in problem.capacity.get(c, {}):
            errs.append(Finding("schema", f"{mw}.routes[{r_i}]",
                                f"{c.model} on {c.gpu} TP{c.tp} cannot serve bucket {k[0]}/{k[1]}"))
            continue
        rps[k] = rps.get(k, 0.0) + v
        served[(c.model, k)] = served.get((c.model, k), 0.0) + v
    return rps
