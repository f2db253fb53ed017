"""One driver for every group of a plan. A dedicated group (plan["replicas"]: one model per
replica) and a sharing group (plan["shared"], docs/sharing.md: every model of the group on each
GPU set, with 1/count of each model's routed load) are both `count` sets of `tp` GPUs hosting
their member models; validate runs min(--replicas, count) sets of a group at once and judges each
member model on its own records.

Per group:
  1. streams  one seeded open-loop arrival stream per (member with load, set), at the member's
              per-set load (routes rps / count) and bucket mix
  2. build    every member as its profile ran it (runtime/spec.py), set j on GPUs j*tp..j*tp+tp-1
              (CPU sets share the cores): a dedicated set is one EngineLoop, a sharing set one
              SharedLoop stepping its models in turn (runtime/sharing.py); with --endpoint, one
              client per stream instead
  3. warm-up  one untimed request per bucket per stream (first-call allocations, connections)
  4. drive    all streams at once, so a sharing set's models compete for the device as the plan's
              time fractions assume; fault injection (tests) kills set 0 or a TP rank mid-run
  5. judge    each member: loadgen.summarize of its records, then load/verdict.py; a set that died
              or a generator that gave up makes every member `error` (what it measured is kept)
A run-time failure never raises: it is the group's result.
"""
from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field, replace

from gpumix.planner.catalog import norm_name
from gpumix.planner.workload import ModelDemand, Workload
from gpumix.profiler.load import generator as loadgen
from gpumix.profiler.load.verdict import Status, status, verdict
from gpumix.profiler.runtime.spec import model_args, provenance, replica_spec, spec_record
from gpumix.profiler.validate.options import ValidateOptions

WARM_TIMEOUT_S = 60.0
Route = tuple[int, int, float, float]  # (input tokens, output tokens, group rps, plan max_rps)


@dataclass
class Target:
    """One model's load in one group of the plan."""
    index: int
    model: str
    gpu: str
    tp: int
    count: int
    routes: list[Route]
    demand: ModelDemand | None

    @property
    def per_replica(self) -> list[tuple[int, int, float]]:
        return [(i, o, rps / self.count) for i, o, rps, _ in self.routes if rps > 0]

    @property
    def planned_rps(self) -> float:
        return sum(r for _, _, r in self.per_replica)

    @property
    def planned_utilization(self) -> float | None:
        if any(mu <= 0 for _, _, rps, mu in self.routes if rps > 0):
            return None
        return sum(rps / self.count / mu for _, _, rps, mu in self.routes if rps > 0)

    @property
    def label(self) -> str:
        return f"{self.model} on {self.gpu} TP{self.tp}"


@dataclass
class Group:
    """A plan group as validate runs it: `count` sets of `tp` GPUs of type `gpu`, each hosting every
    member (dedicated: one model; sharing: several, stepped in turn)."""
    index: int
    gpu: str
    tp: int
    count: int
    members: list[Target]
    sharing: bool = False
    entry: dict = field(default_factory=dict)  # the plan's group: a sharing group's utilization, memory

    @property
    def models(self) -> list[str]:
        return [t.model for t in self.members]

    @property
    def active(self) -> list[Target]:
        """Members with load routed to them."""
        return [t for t in self.members if t.per_replica]

    @property
    def unit(self) -> str:
        return "set" if self.sharing else "replica"

    @property
    def label(self) -> str:
        if not self.sharing:
            return self.members[0].label
        return f"shared[{self.index}] ({' + '.join(self.models)}) on {self.gpu} TP{self.tp}"

    @property
    def planned_utilization(self) -> float | None:
        fs = [t.planned_utilization for t in self.active]
        return None if any(f is None for f in fs) else sum(fs)


# --- the plan's groups --------------------------------------------------------------------------

def _target(index: int, group: dict, member: dict, by_name: dict) -> Target:
    routes = [(int(r["input_tokens"]), int(r["output_tokens"]), float(r["rps"]),
               float(r.get("max_rps") or 0.0)) for r in member.get("routes", [])]
    return Target(index, member["model"], group["gpu"], int(group["tp"]), int(group["count"]), routes,
                  by_name.get(norm_name(member["model"])))


def plan_groups(plan: dict, workload: Workload) -> list[Group]:
    """The dedicated groups, then the sharing groups, in plan order."""
    by_name = {norm_name(m.name): m for m in workload.models}
    out = []
    for i, g in enumerate(plan["replicas"]):
        out.append(Group(i, g["gpu"], int(g["tp"]), int(g["count"]), [_target(i, g, g, by_name)], entry=g))
    for i, g in enumerate(plan.get("shared") or []):
        members = [_target(i, g, e, by_name) for e in g["models"]]
        out.append(Group(i, g["gpu"], int(g["tp"]), int(g["count"]), members, sharing=True, entry=g))
    return out


def local_devices(device: str) -> int:
    import torch

    return torch.cuda.device_count()


def skip_reason(g: Group, opts: ValidateOptions, here: str | None, served: list[str] | None) -> str:
    """Why the group cannot run here ("" when it can)."""
    if opts.model and norm_name(opts.model) not in {norm_name(m) for m in g.models}:
        return f"--model {opts.model} selects other groups"
    for t in g.members:
        if t.demand is None:
            return f"{t.model} is not in the workload"
    if not g.active:
        return "no load routed to this group"
    if here is not None and norm_name(g.gpu) != norm_name(here):
        return f"GPU type {g.gpu} is not this machine's ({here})"
    if opts.endpoint:
        if g.sharing:
            missing = [m for m in g.models if served is not None and m not in served]
            return f"the endpoint does not serve {', '.join(missing)}" if missing else ""
        name = opts.endpoint_model or g.members[0].model
        if served is not None and name not in served:
            return f"the endpoint serves {', '.join(served) or 'no model'}, not {name}"
        return ""
    n = min(opts.replicas, g.count)
    if opts.device.startswith("cuda") and n * g.tp > (have := local_devices(opts.device)):
        return f"needs {n * g.tp} GPUs for {n} {g.unit}(s) of TP {g.tp}, this machine has {have}"
    return ""


# --- report rows --------------------------------------------------------------------------------

def target_row(t: Target) -> dict:
    """A report row's plan side: what the member was planned to carry per replica (set)."""
    row = {"model": t.model, "gpu": t.gpu, "tp": t.tp, "count": t.count,
           "planned_rps": round(t.planned_rps, 4),
           "planned_utilization": None if t.planned_utilization is None else round(t.planned_utilization, 4),
           "predicted_capacity_rps": (round(t.planned_rps / t.planned_utilization, 4)
                                      if t.planned_utilization else None),
           "routes": [{"input_tokens": i, "output_tokens": o, "rps": round(r, 6)}
                      for i, o, r in t.per_replica]}
    if t.demand is not None:
        row["slo"] = {"ttft_ms": t.demand.slo.ttft_ms, "tpot_ms": t.demand.slo.tpot_ms}
    return row


def member_rows(g: Group) -> dict[str, dict]:
    """model -> its report row; a sharing group's rows name the group and the other models."""
    if not g.sharing:
        return {t.model: target_row(t) for t in g.members}
    return {t.model: {**target_row(t), "shared": g.index, "sharing_with": [m for m in g.models if m != t.model]}
            for t in g.members}


def group_row(g: Group) -> dict:
    """A sharing group's entry in report["shared"]: the plan's figures for the whole group."""
    e, u = g.entry, g.planned_utilization
    return {"index": g.index, "gpu": g.gpu, "tp": g.tp, "count": g.count, "models": g.models,
            "planned_utilization": None if u is None else round(u, 4),
            "plan_utilization": e.get("utilization"),
            "memory_gb_per_gpu": e.get("memory_gb_per_gpu"),
            "memory_budget_gb_per_gpu": e.get("memory_budget_gb_per_gpu"),
            "model_memory_gb_per_gpu": {m.get("model"): m.get("memory_gb_per_gpu") for m in e["models"]}}


def announce(g: Group, opts: ValidateOptions) -> str:
    """The progress line before a group runs."""
    if not g.sharing:
        t = g.members[0]
        return f"{g.label}: {t.planned_rps:.2f} req/s per replica for {opts.duration_s:g} s"
    return (f"{g.label}: " + ", ".join(f"{t.model} {t.planned_rps:.2f}" for t in g.members)
            + f" req/s per set for {opts.duration_s:g} s")


def failure_line(g: Group, row: dict) -> str:
    where = f"{row['model']} in {g.label}" if g.sharing else g.label
    return f"{where}: " + "; ".join(row["reasons"])


# --- one group ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stream:
    """One open-loop arrival stream: a member's load on one set."""
    target: Target
    set: int
    seed: int  # arrivals, bucket order and prompt token ids
    schedule: list[loadgen.Arrival]


def streams(g: Group, opts: ValidateOptions, n: int) -> list[Stream]:
    out = []
    for k, t in enumerate(g.active):
        for j in range(n):
            seed = opts.seed + 1000 * k + j
            out.append(Stream(t, j, seed, loadgen.arrivals(t.per_replica, opts.duration_s, seed, opts.gap_shape)))
    return out


def member_spec(t: Target, opts: ValidateOptions, profiles: list[dict]):
    """(ReplicaSpec, where its args came from): the model as the profile ran it on this GPU and TP."""
    prov = provenance(profiles, t.model, t.gpu, t.tp)
    try:
        args, source = model_args(prov, opts.run, t.demand.shape)
    except LookupError:
        raise LookupError(f"no shape for {t.model}: give the workload model a `config`, or "
                          "validate with the profile file it was planned from") from None
    longest = max(b.input_tokens + b.output_tokens for b in t.demand.buckets)
    return replica_spec(args, prov, opts.run, t.tp, longest), source


def _start_sets(g: Group, opts: ValidateOptions, profiles: list[dict], n: int, rows: dict,
                loops: list) -> list[dict]:
    """Build and start n sets into `loops` (so a failure half-way still stops those started);
    returns each set's {model: what to submit to}."""
    from gpumix.profiler.runtime.model import ModelArgs, head_count_ok
    from gpumix.profiler.runtime.sharing import start_replica

    specs = {}
    for t in g.members:
        spec, source = member_spec(t, opts, profiles)
        rows[t.model]["run"] = spec_record(spec, source)
        why = head_count_ok(ModelArgs(**spec.args), g.tp)
        if why:
            raise ValueError(f"{t.model if g.sharing else 'the model'} as run cannot be split: {why}")
        specs[t.model] = spec
    doors = []
    for j in range(n):  # set j on GPUs j*tp..j*tp+tp-1; CPU sets share the cores
        dev = f"cuda:{j * g.tp}" if opts.device == "cuda" else opts.device
        loop, door = start_replica({m: replace(s, device=dev) for m, s in specs.items()}, shared=g.sharing)
        loops.append(loop)
        doors.append(door)
    return doors


def _backends(g: Group, opts: ValidateOptions, profiles: list[dict], n: int, ss: list[Stream],
              rows: dict, loops: list) -> list:
    """One loadgen backend per stream: a client of the endpoint, or a door into its set."""
    if opts.endpoint:
        from gpumix.profiler.load.client import EndpointBackend

        ep = opts.endpoint_target()
        name = (lambda t: t.model) if g.sharing else (lambda t: opts.endpoint_model or t.model)
        return [EndpointBackend(ep, name(s.target), opts.prompt) for s in ss]
    from gpumix.profiler.runtime.replica import ReplicaBackend

    doors = _start_sets(g, opts, profiles, n, rows, loops)
    return [ReplicaBackend(doors[s.set][s.target.model], s.seed) for s in ss]


def _warm(backend, buckets: list[tuple[int, int]], timeout_s: float) -> None:
    """One request per bucket before timing: first-call allocations, connection set-up."""
    schedule = [loadgen.Arrival(0.0, i, o, k) for k, (i, o) in enumerate(buckets)]
    res = loadgen.run([backend], [schedule], drain_s=timeout_s, request_timeout_s=timeout_s, abort_after=1)
    bad = [r for r in res.records if not r.ok]
    if bad:
        raise ConnectionError(f"warm-up request failed: {bad[0].error}")


def _faults(g: Group, opts: ValidateOptions, loops: list) -> list[threading.Timer]:
    """Fault injection (tests): set 0 dies, or replica 0's last TP rank is SIGKILLed, mid-run."""
    killers = []
    if opts.kill_replica_after_s is not None and loops:
        what = "shared set 0" if g.sharing else "replica 0"
        killers.append(threading.Timer(opts.kill_replica_after_s, loops[0].kill,
                                       (f"fault injection: {what} killed mid-run",)))
    if opts.kill_rank_after_s is not None and loops and g.tp > 1 and not g.sharing:
        pid = loops[0].engine.ranks.pids()[-1]
        killers.append(threading.Timer(opts.kill_rank_after_s, os.kill, (pid, signal.SIGKILL)))
    return killers


def run_group(g: Group, opts: ValidateOptions, profiles: list[dict], rows: dict[str, dict]) -> dict | None:
    """Measure one group into `rows` (model -> its report row, updated in place); return a sharing
    group's entry for report["shared"] (None for a dedicated group). Never raises for a run-time
    failure: it is reported."""
    n = max(1, min(opts.replicas, g.count))
    ss = streams(g, opts, n)
    entry = {**group_row(g), "sets_run": n} if g.sharing else None
    for r in rows.values():
        r["replicas_run"] = n
    loops, killers = [], []
    try:
        backends = _backends(g, opts, profiles, n, ss, rows, loops)
        for b, s in zip(backends, ss):
            _warm(b, sorted({(i, o) for i, o, _ in s.target.per_replica}), WARM_TIMEOUT_S)
        killers = _faults(g, opts, loops)
        for k in killers:
            k.start()
        res = loadgen.run(backends, [s.schedule for s in ss], drain_s=opts.drain,
                          request_timeout_s=opts.duration_s + opts.drain + 5.0)
    except Exception as e:  # noqa: BLE001 - a set that cannot start is this group's result
        why = f"{type(e).__name__}: {e}"
        for r in rows.values():
            r.update(status=Status.ERROR, passed=False, reasons=[why])
        if entry is not None:
            entry.update(status=Status.ERROR, passed=False, reasons=[why])
        return entry
    finally:
        for k in killers:
            k.cancel()
        for lp in loops:
            lp.stop()
    died = next((lp.error for lp in loops if lp.error), None)
    broken = [x for x in (died, res.aborted) if x]
    judge(g, opts, n, ss, res, broken, rows)
    if entry is not None:
        if loops:
            entry["steps"] = {m: sum(lp.steps[m] for lp in loops) for m in g.models}
        failed = [rows[t.model]["model"] for t in g.active if not rows[t.model]["passed"]]
        entry["reasons"] = broken or ([f"{', '.join(failed)} failed"] if failed else [])
        entry["passed"] = not failed and not broken
        entry["status"] = Status.PASSED if entry["passed"] else Status.ERROR if broken else Status.FAILED
    return entry


def judge(g: Group, opts: ValidateOptions, n: int, ss: list[Stream], res: loadgen.RunResult,
          broken: list[str], rows: dict[str, dict]) -> None:
    """Each member's measurements and verdict from its own records, into its row."""
    owner = {id(a): s.target.model for s in ss for a in s.schedule}
    for t in g.members:
        row = rows[t.model]
        if not t.per_replica:
            row.update(status=Status.SKIPPED, passed=None, reasons=["no load routed to this model"])
            continue
        slo = t.demand.slo
        records = [r for r in res.records if owner[id(r.arrival)] == t.model]
        row.update(loadgen.summarize(records, [s.schedule for s in ss if s.target is t], slo.ttft_ms, slo.tpot_ms))
        row["wall_s"] = round(res.wall_s, 3)
        reasons = broken + verdict(row, t.planned_rps * n, slo, opts.criteria)
        row.update(reasons=reasons, passed=not reasons, status=status(reasons, bool(broken)))
