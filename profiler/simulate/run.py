"""`gpumix simulate`: every replica of a plan as a continuous-batching engine on a simulated clock.

Flow: read the plan and its workload as `gpumix validate` does (profiler.validate.run: the plan
checker, schema problems exit 2) -> the plan's groups (profiler.validate.groups.plan_groups, the
same Group and Target validate drives) -> a step model per (model, GPU, TP): the profile's latency
fit, else the roofline (steps.py) -> one Unit per replica (sharing group: per set), fed by its
arrivals -> run the units (independent under the plan router, so across processes) -> the report
(report.py: validate's schema and verdict).

Arrivals (router `plan`): replica j of a group gets, per member k with load, exactly the stream
`gpumix validate` sends its set j: profiler.load.generator.arrivals(per-replica routes, duration,
seed + 1000 k + j, gap shape). validate runs min(--replicas, count) sets; simulate runs all count.
Router `least-loaded`: one stream per model at its whole planned rate and bucket mix (seed +
1000 x the model's index in the workload); each request goes to the replica of a group serving its
bucket with the fewest unfinished requests (ties: plan order), which couples the replicas, so that
router runs in one process.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from gpumix.planner import reading
from gpumix.planner.catalog import load_catalog, norm_name
from gpumix.planner.errors import InputError
from gpumix.planner.problem import config_of
from gpumix.planner.roofline import Efficiency
from gpumix.planner.workload import Workload, load_workload
from gpumix.profiler.load import generator as loadgen
from gpumix.profiler.load.verdict import MIN_RATE_FRACTION, MIN_SLO_ATTAINMENT, Criteria
from gpumix.profiler.simulate import steps as stepmod
from gpumix.profiler.simulate.engine import ModelEngine, Unit
from gpumix.profiler.validate.groups import Group, plan_groups
from gpumix.profiler.validate.run import check, read_plan, workload_path

ROUTERS = ("plan", "least-loaded")
SEED_STRIDE = 1000  # validate's per-member seed stride (validate/groups.py streams)


@dataclass(frozen=True)
class SimOptions:
    duration_s: float = 60.0
    arrivals: str = "poisson"
    gamma_shape: float = 0.5
    rate_scale: float = 1.0
    seed: int = 0
    router: str = "plan"
    profiles: str | None = None  # default: the plan's inputs.profiles
    processes: int | None = None  # default: the CPU count
    min_rate_fraction: float = MIN_RATE_FRACTION
    min_slo_attainment: float = MIN_SLO_ATTAINMENT

    @property
    def drain_s(self) -> float:
        return max(5.0, self.duration_s)  # validate's default drain

    @property
    def gap_shape(self) -> float:
        return 1.0 if self.arrivals == "poisson" else self.gamma_shape

    @property
    def criteria(self) -> Criteria:
        return Criteria(self.min_rate_fraction, self.min_slo_attainment)


@dataclass
class Setup:
    """What the units are built from (picklable: handed to worker processes by fork)."""
    plan_path: Path
    plan: dict
    workload_path: Path
    workload: Workload
    groups: list[Group]
    steps: dict  # (group kind, group index, member model) -> StepModel
    profiles_path: str | None
    notes: list[str]


# --- inputs -------------------------------------------------------------------------------------

def read_profile_runs(path: str | None, plan_path: Path, given: bool = False) -> tuple[str | None, list[dict]]:
    """(path, `profiles` records with a fit) of a `gpumix profile` file, read through planner.reading;
    given: named by --profiles (must exist), else the plan's inputs.profiles (the roofline if gone)."""
    from gpumix.planner.reading import read_structured

    if not path:
        return None, []
    p = Path(path)
    if not given and not p.is_absolute() and not reading.exists(p) and reading.exists(plan_path.parent / p):
        p = plan_path.parent / p
    if not reading.exists(p):
        if given:
            raise InputError(str(p), "--profiles", "file not found")
        return None, []
    doc = read_structured(p, "profiles")
    if not isinstance(doc, dict):
        raise InputError(str(p), "", "a profile file must be a mapping")
    runs = doc.get("profiles") or []
    if not isinstance(runs, list):
        raise InputError(str(p), "profiles", "must be a list")
    out = []
    for i, r in enumerate(runs):
        if not isinstance(r, dict) or r.get("fit") is None:
            continue
        fit = r["fit"]
        try:
            from gpumix.profiler.measure.fit import LatencyModel

            coef = LatencyModel.from_dict(fit)
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                     for v in (*coef.prefill, *coef.decode))
        except (KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            raise InputError(str(p), f"profiles[{i}].fit", "must hold prefill_ms and decode_ms {a, b, c} >= 0")
        if not isinstance(r.get("model"), str) or not isinstance(r.get("gpu"), str) or \
                not isinstance(r.get("tp"), int) or isinstance(r.get("tp"), bool):
            raise InputError(str(p), f"profiles[{i}]", "needs model, gpu (strings) and tp (an integer)")
        prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else {}
        out.append({"model": r["model"], "gpu": r["gpu"], "tp": r["tp"], "fit": fit, "provenance": prov})
    return str(p), out


def step_model(member, g: Group, runs: list[dict], workload: Workload, where: str, plan_path: Path, catalog):
    """The StepModel of one member of a group: its profile fit on this GPU and TP, else the roofline
    (catalog: the bundled one with the plan's efficiency file over it, as the plan was made)."""
    longest = max(b.input_tokens + b.output_tokens for b in member.demand.buckets)
    for r in runs:
        if norm_name(r["model"]) == norm_name(member.model) and norm_name(r["gpu"]) == norm_name(g.gpu) \
                and r["tp"] == g.tp:
            return stepmod.from_fit(r["fit"], r["provenance"], longest)
    gpu = catalog.gpu(g.gpu) or next((o.spec for o in workload.gpus or () if norm_name(o.name) == norm_name(g.gpu)
                                      and o.spec is not None), None)
    shape = member.demand.shape
    if shape is None or gpu is None:
        missing = "a model shape (workload `config`, or a catalog model)" if shape is None else \
            f"a GPU spec for {g.gpu!r} (not in the catalog)"
        raise InputError(str(plan_path), where, f"{member.label}: no latency fit in the profiles for this "
                         f"GPU and TP, and the roofline needs {missing}")
    prec = config_of({**g.entry, **({} if not g.sharing else _member_entry(g, member.model)), "gpu": g.gpu,
                      "tp": g.tp}).precision
    eff = Efficiency.from_dict(catalog.gpu_efficiency(gpu.name))
    routed = [(i, o) for i, o, _ in member.per_replica]  # what this group serves of the model's buckets
    sm = stepmod.from_roofline(shape, gpu, g.tp, eff, prec, routed)
    if isinstance(sm, str):
        raise InputError(str(plan_path), where, f"{member.label}: {sm}")
    return sm


def _member_entry(g: Group, model: str) -> dict:
    return next((m for m in g.entry.get("models", []) if m.get("model") == model), {})


def plan_catalog(plan_path: Path, plan: dict):
    """The catalog the plan was made with: the bundled one under the plan's inputs.efficiency file
    (its factors, and the specs of GPU types outside the catalog) when that file is still there."""
    from gpumix.planner.efficiency import with_efficiency

    given = (plan.get("inputs") or {}).get("efficiency")
    if not isinstance(given, str) or not given:
        return load_catalog()
    path = Path(given)
    if not path.is_absolute() and not reading.exists(path) and reading.exists(plan_path.parent / path):
        path = plan_path.parent / path
    return with_efficiency(load_catalog(), path) if reading.exists(path) else load_catalog()


MAX_DURATION_S = 86_400.0  # --duration: a day of simulated arrivals
MAX_REQUESTS = 2_000_000  # expected requests of a run (every replica, --rate-scale included)
GAMMA_SHAPES = (0.01, 1000.0)  # --gamma-shape: below, nearly every gap is 0 (a float underflow)


def prepare(plan_path: Path, workload_arg: Path | None, opts: SimOptions) -> Setup:
    if opts.router not in ROUTERS:
        raise InputError("gpumix simulate", "--router", f"must be one of {', '.join(ROUTERS)}, got {opts.router!r}")
    if opts.arrivals not in ("poisson", "gamma"):
        raise InputError("gpumix simulate", "--arrivals", f"must be poisson or gamma, got {opts.arrivals!r}")
    for name, v in (("--duration", opts.duration_s), ("--rate-scale", opts.rate_scale),
                    ("--gamma-shape", opts.gamma_shape)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise InputError("gpumix simulate", name, f"must be a positive number, got {v!r}")
    if opts.arrivals == "gamma" and not GAMMA_SHAPES[0] <= opts.gamma_shape <= GAMMA_SHAPES[1]:
        raise InputError("gpumix simulate", "--gamma-shape", f"must be in [{GAMMA_SHAPES[0]:g}, {GAMMA_SHAPES[1]:g}] "
                                                             f"(gap CV 10 .. 0.03), got {opts.gamma_shape:g}")
    if opts.duration_s > MAX_DURATION_S:
        raise InputError("gpumix simulate", "--duration", f"must be at most {MAX_DURATION_S:g} s (a day of "
                                                          f"simulated arrivals), got {opts.duration_s:g}")
    plan = read_plan(plan_path)
    wl_path = workload_path(plan_path, plan, workload_arg)
    catalog = plan_catalog(plan_path, plan)
    workload = load_workload(wl_path, catalog, need_shapes=False)
    notes = [f"plan checker: {v}" for v in check(plan_path, plan, workload)]
    groups = plan_groups(plan, workload)
    prof_path, runs = read_profile_runs(opts.profiles or (plan.get("inputs") or {}).get("profiles"), plan_path,
                                        given=bool(opts.profiles))
    steps = {}
    for g in groups:
        kind = "shared" if g.sharing else "replicas"
        for k, t in enumerate(g.members):
            where = f"{kind}[{g.index}]" + (f".models[{k}]" if g.sharing else "")
            if t.demand is None:
                raise InputError(str(plan_path), f"{where}.model", f"{t.model!r} is not in the workload {wl_path}")
            if t.per_replica:
                steps[(g.sharing, g.index, t.model)] = step_model(t, g, runs, workload, where, plan_path, catalog)
    offered = sum(t.planned_rps * g.count for g in groups for t in g.members if t.demand is not None)
    expected = offered * opts.rate_scale * opts.duration_s
    if expected > MAX_REQUESTS:  # bounded before a single request is drawn: no run for hours
        raise InputError("gpumix simulate", "--duration", f"{opts.duration_s:g} s at x{opts.rate_scale:g} the "
                         f"plan's {offered:.4g} req/s is {expected:.3g} requests; at most {MAX_REQUESTS:,} "
                         "(shorten --duration or lower --rate-scale)")
    return Setup(plan_path, plan, wl_path, workload, groups, steps, prof_path, notes)


# --- units --------------------------------------------------------------------------------------

def member_routes(t, scale: float) -> list[tuple[int, int, float]]:
    return [(i, o, r * scale) for i, o, r in t.per_replica]


def stream_seed(seed: int, k: int, j: int) -> int:
    """validate's seed of member k's stream on set j (profiler/validate/groups.py streams)."""
    return seed + SEED_STRIDE * k + j


def build_unit(setup: Setup, gi: int, j: int, opts: SimOptions, scales: dict | None = None,
               fill: bool = True) -> Unit:
    """Replica (set) j of group gi; fill: push its plan-router arrivals. scales: {model: rate factor}
    on top of --rate-scale (find-max-utilization)."""
    g = setup.groups[gi]
    engines = []
    for k, t in enumerate(g.active):
        e = ModelEngine(setup.steps[(g.sharing, g.index, t.model)])
        e.model = t.model
        if fill:
            f = opts.rate_scale * (scales or {}).get(t.model, 1.0)
            for a in loadgen.arrivals(member_routes(t, f), opts.duration_s, stream_seed(opts.seed, k, j),
                                      opts.gap_shape):
                e.push(a.t, a.input_tokens, a.output_tokens)
        engines.append(e)
    return Unit(engines)


def unit_result(u: Unit) -> list[dict]:
    return [{"model": e.model, "t": np.asarray(e.t_arr), "n_in": np.asarray(e.n_in, dtype=np.int64),
             "n_out": np.asarray(e.n_out, dtype=np.int64), "admit": np.asarray(e.admit),
             "first": np.asarray(e.first), "done": np.asarray(e.done), "error": np.asarray(e.error, dtype=np.int8),
             "steps": e.steps_run, "events": e.events, "kv_tokens": e.kv_cap} for e in u.engines]


# --- running (plan router: one unit at a time, anywhere) -----------------------------------------

_JOB: dict = {}  # what forked workers build their units from


def _run_one(key: tuple[int, int]) -> tuple[tuple[int, int], list[dict]]:
    setup, opts, scales = _JOB["setup"], _JOB["opts"], _JOB["scales"]
    u = build_unit(setup, *key, opts, scales)
    u.run(math.inf, _JOB["horizon"])
    return key, unit_result(u)


def unit_keys(setup: Setup, only: set | None = None, max_sets: int | None = None) -> list[tuple[int, int]]:
    keys = []
    for gi, g in enumerate(setup.groups):
        if not g.active or (only is not None and not (set(g.models) & only)):
            continue
        n = g.count if max_sets is None else min(g.count, max_sets)
        keys += [(gi, j) for j in range(n)]
    return keys


def run_plan_router(setup: Setup, opts: SimOptions, keys: list, scales: dict | None,
                    tick: Callable[[int], None]) -> dict:
    """{(group, set): result}; the same for any process count (each unit depends on its seeds only)."""
    # one horizon for every unit: requests unfinished drain_s after the run's end fail (validate
    # waits drain_s after its group's last arrival, which is within the duration)
    _JOB.update(setup=setup, opts=opts, scales=scales, horizon=opts.duration_s + opts.drain_s)
    procs = max(1, min(opts.processes or os.cpu_count() or 1, len(keys)))
    # the biggest units first, so the last process to finish does not start a big one late
    weight = {k: sum(r for t in setup.groups[k[0]].active for _, _, r in t.per_replica) for k in keys}
    order = sorted(keys, key=lambda k: (-weight[k], k))
    out = {}
    if procs == 1:
        for k in order:
            out[k] = _run_one(k)[1]
            tick(1)
        return out
    import multiprocessing as mp

    with mp.get_context("fork").Pool(procs) as pool:
        for k, res in pool.imap_unordered(_run_one, order, chunksize=1):
            out[k] = res
            tick(1)
    return out


# --- running (least-loaded: one process, replicas coupled by the router) -------------------------

def run_least_loaded(setup: Setup, opts: SimOptions, keys: list, tick: Callable[[int], None]) -> dict:
    units = {k: build_unit(setup, *k, opts, fill=False) for k in keys}
    engine_of = {(k, e.model): e for k, u in units.items() for e in u.engines}
    index = {norm_name(m.name): i for i, m in enumerate(setup.workload.models)}
    streams = []
    for m in setup.workload.models:
        routes: dict = {}
        cands: dict = {}
        for k in keys:
            g = setup.groups[k[0]]
            for t in g.active:
                if t.model != m.name:
                    continue
                for i, o, r in t.per_replica:
                    routes[(i, o)] = routes.get((i, o), 0.0) + r
                    cands.setdefault((i, o), []).append(k)
        if not routes:
            continue
        rs = [(i, o, r * opts.rate_scale) for (i, o), r in routes.items()]
        for a in loadgen.arrivals(rs, opts.duration_s, opts.seed + SEED_STRIDE * index[norm_name(m.name)],
                                  opts.gap_shape):
            streams.append((a.t, index[norm_name(m.name)], m.name, a.input_tokens, a.output_tokens,
                            cands[(a.input_tokens, a.output_tokens)]))
    streams.sort(key=lambda s: (s[0], s[1]))
    horizon = opts.duration_s + opts.drain_s
    for t, _, model, n_in, n_out, cands in streams:
        best, load = None, None
        for k in cands:
            u = units[k]
            u.run(t, horizon)
            n = u.outstanding()
            if load is None or n < load:
                best, load = k, n
        engine_of[(best, model)].push(t, n_in, n_out)
    out = {}
    for k, u in units.items():
        u.run(math.inf, horizon)
        out[k] = unit_result(u)
        tick(1)
    return out


def simulate(plan_path: Path, workload_arg: Path | None, opts: SimOptions,
             progress: Callable[[int, int], Callable[[int], None]] = lambda total, label: (lambda n: None),
             setup: Setup | None = None) -> tuple[dict, dict]:
    """(report, stats): the report (docs/simulate.md) and run figures (wall time, events/s; not in
    the report, so the same input gives the same report)."""
    from gpumix.profiler.simulate.report import build_report

    setup = setup or prepare(plan_path, workload_arg, opts)
    keys = unit_keys(setup)
    tick = progress(len(keys), "replicas")
    t0 = time.perf_counter()
    if opts.router == "plan":
        results = run_plan_router(setup, opts, keys, None, tick)
    else:
        results = run_least_loaded(setup, opts, keys, tick)
    wall = time.perf_counter() - t0
    report = build_report(setup, opts, results)
    events = report["simulation"]["events"]
    stats = {"wall_s": wall, "events": events, "events_per_s": events / wall if wall > 0 else None,
             "steps": report["simulation"]["engine_steps"], "replicas": len(keys),
             "processes": 1 if opts.router != "plan" else max(1, min(opts.processes or os.cpu_count() or 1,
                                                                   max(len(keys), 1)))}
    return report, stats


def scaled(opts: SimOptions, **kw) -> SimOptions:
    return replace(opts, **kw)
