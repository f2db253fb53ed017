"""`gpumix validate` for the plan's shared groups (plan["shared"], docs/sharing.md).

A shared group is `count` GPU sets, each hosting every model of the group with 1/count of each
model's routed load. Validation runs `min(--replicas, count)` sets; each set is one SharedLoop
(profiler/shared_replica.py: one engine per model on the same device or TP group, stepped in turn)
driven by one open-loop arrival stream per model at its planned per-set rate and bucket mix, all
at once, so the models compete for the device as the plan's time fractions assume.

The report gets one row per (group, model) in `groups` (with `shared`: the group's index), judged
like a dedicated group (achieved rate and SLO attainment), and one entry per group in `shared`
with the group's verdict (passed when every model passed), the planned time use (sum of the
models' time fractions per set) and the plan's memory use per GPU.
"""
from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, replace

from gpumix.planner.catalog import norm_name
from gpumix.planner.workload import Workload
from gpumix.profiler.load import generator as loadgen
from gpumix.profiler.validate.run import Target, ValidateOptions, _warm, local_devices, run_setup, verdict


@dataclass
class SharedTarget:
    index: int
    gpu: str
    tp: int
    count: int
    members: list[Target]  # each model's routes in this group (group rps, spread over `count` sets)
    entry: dict  # the plan's group, for its utilization and memory figures

    @property
    def models(self) -> list[str]:
        return [t.model for t in self.members]

    @property
    def label(self) -> str:
        return f"shared[{self.index}] ({' + '.join(self.models)}) on {self.gpu} TP{self.tp}"

    @property
    def planned_utilization(self) -> float | None:
        fs = [t.planned_utilization for t in self.members if t.per_replica]
        return None if any(f is None for f in fs) else sum(fs)


def shared_targets(plan: dict, workload: Workload) -> list[SharedTarget]:
    by_name = {norm_name(m.name): m for m in workload.models}
    out = []
    for i, g in enumerate(plan.get("shared") or []):
        members = []
        for e in g["models"]:
            routes = [(int(r["input_tokens"]), int(r["output_tokens"]), float(r["rps"]),
                       float(r.get("max_rps") or 0.0)) for r in e.get("routes", [])]
            members.append(Target(i, e["model"], g["gpu"], int(g["tp"]), int(g["count"]), routes,
                                  by_name.get(norm_name(e["model"]))))
        out.append(SharedTarget(i, g["gpu"], int(g["tp"]), int(g["count"]), members, g))
    return out


def skip_reason(st: SharedTarget, opts: ValidateOptions, here: str | None, served: list[str] | None) -> str:
    if opts.model and norm_name(opts.model) not in {norm_name(m) for m in st.models}:
        return f"--model {opts.model} selects other groups"
    for t in st.members:
        if t.demand is None:
            return f"{t.model} is not in the workload"
    if not any(t.per_replica for t in st.members):
        return "no load routed to this group"
    if here is not None and norm_name(st.gpu) != norm_name(here):
        return f"GPU type {st.gpu} is not this machine's ({here})"
    if opts.endpoint:
        missing = [m for m in st.models if served is not None and m not in served]
        return f"the endpoint does not serve {', '.join(missing)}" if missing else ""
    n = min(opts.replicas, st.count)
    if opts.device.startswith("cuda") and n * st.tp > (have := local_devices(opts.device)):
        return f"needs {n * st.tp} GPUs for {n} set(s) of TP {st.tp}, this machine has {have}"
    return ""


def group_row(st: SharedTarget) -> dict:
    e = st.entry
    u = st.planned_utilization
    return {"index": st.index, "gpu": st.gpu, "tp": st.tp, "count": st.count, "models": st.models,
            "planned_utilization": None if u is None else round(u, 4),
            "plan_utilization": e.get("utilization"),
            "memory_gb_per_gpu": e.get("memory_gb_per_gpu"),
            "memory_budget_gb_per_gpu": e.get("memory_budget_gb_per_gpu"),
            "model_memory_gb_per_gpu": {m.get("model"): m.get("memory_gb_per_gpu") for m in e["models"]}}


def _build(st: SharedTarget, opts: ValidateOptions, profiles: list[dict], n: int, rows: dict) -> list:
    """n SharedLoops, set j on GPUs j*tp..; each model built as its profile ran it."""
    from gpumix.profiler.runtime.replica import ReplicaSpec
    from gpumix.profiler.runtime.model import ModelArgs, head_count_ok
    from gpumix.profiler.runtime.sharing import build_shared

    specs = {}
    for t in st.members:
        setup = run_setup(t, opts, profiles)
        rows[t.model]["run"] = setup
        specs[t.model] = ReplicaSpec(**{k: v for k, v in setup.items() if k != "from"})
        why = head_count_ok(ModelArgs(**specs[t.model].args), st.tp)
        if why:
            raise ValueError(f"{t.model} as run cannot be split: {why}")
    loops = []
    for j in range(n):
        dev = f"cuda:{j * st.tp}" if opts.device == "cuda" else opts.device
        loops.append(build_shared({m: replace(spec, device=dev) for m, spec in specs.items()}).start())
    return loops


def run_shared_group(st: SharedTarget, opts: ValidateOptions, profiles: list[dict],
                     rows: dict[str, dict]) -> dict:
    """Measure one shared group into `rows` (model -> its report row, updated in place); return
    the group's entry. Never raises for a run-time failure (it is reported)."""
    n = max(1, min(opts.replicas, st.count))
    shape = 1.0 if opts.arrivals == "poisson" else opts.gamma_shape
    active = [t for t in st.members if t.per_replica]
    keys = [(j, t) for t in active for j in range(n)]  # one arrival stream per (set, model)
    schedules = [loadgen.arrivals(t.per_replica, opts.duration_s, opts.seed + 1000 * k + j, shape)
                 for k, t in enumerate(active) for j in range(n)]
    group = {**group_row(st), "sets_run": n}
    for r in rows.values():
        r["replicas_run"] = n
    loops, killers = [], []
    try:
        if opts.endpoint:
            from gpumix.profiler.load.client import Endpoint, EndpointBackend

            ep = Endpoint.parse(opts.endpoint)
            backends = [EndpointBackend(ep, t.model, opts.prompt) for _, t in keys]
        else:
            from gpumix.profiler.runtime.replica import ReplicaBackend

            loops = _build(st, opts, profiles, n, rows)
            backends = [ReplicaBackend(loops[j].member(t.model), opts.seed + 1000 * k + j)
                        for k, (j, t) in enumerate(keys)]
        for b, (_, t) in zip(backends, keys):
            _warm(b, sorted({(i, o) for i, o, _ in t.per_replica}), timeout_s=60.0)
        if opts.kill_replica_after_s is not None and loops:
            killers.append(threading.Timer(opts.kill_replica_after_s, loops[0].kill,
                                           ("fault injection: shared set 0 killed mid-run",)))
        for k in killers:
            k.start()
        res = loadgen.run(backends, schedules, drain_s=opts.drain,
                          request_timeout_s=opts.duration_s + opts.drain + 5.0)
    except Exception as e:  # noqa: BLE001 - a set that cannot start is this group's result
        why = f"{type(e).__name__}: {e}"
        for r in rows.values():
            r.update(status="error", passed=False, reasons=[why])
        group.update(status="error", passed=False, reasons=[why])
        return group
    finally:
        for k in killers:
            k.cancel()
        for lp in loops:
            lp.stop()
    if loops:
        group["steps"] = {m: sum(lp.steps[m] for lp in loops) for m in st.models}
    owner = {id(a): t.model for (_, t), s in zip(keys, schedules) for a in s}
    records, scheds = defaultdict(list), defaultdict(list)
    for rec in res.records:
        records[owner[id(rec.arrival)]].append(rec)
    for (_, t), s in zip(keys, schedules):
        scheds[t.model].append(s)
    died = next((lp.error for lp in loops if lp.error), None)
    broken = [x for x in (died, res.aborted) if x]
    for t in st.members:
        row = rows[t.model]
        if not t.per_replica:
            row.update(status="skipped", passed=None, reasons=["no load routed to this model"])
            continue
        slo = t.demand.slo
        row.update(loadgen.summarize(records[t.model], scheds[t.model], slo.ttft_ms, slo.tpot_ms))
        row["wall_s"] = round(res.wall_s, 3)
        reasons = broken + verdict(row, t.planned_rps * n, slo, opts)
        row.update(reasons=reasons, passed=not reasons,
                   status="passed" if not reasons else "error" if broken else "failed")
    judged = [rows[t.model] for t in active]
    failed = [r["model"] for r in judged if not r["passed"]]
    group["reasons"] = broken or ([f"{', '.join(failed)} failed"] if failed else [])
    group["passed"] = not failed and not broken
    group["status"] = "passed" if group["passed"] else "error" if broken else "failed"
    return group
