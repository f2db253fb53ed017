"""`gpumix validate`: run a plan's groups under their planned load and report whether the plan's
prediction holds.

Flow: read the plan -> the plan checker (schema problems are bad input; load, demand and cost
findings are notes, since validation is what judges load) -> pick the groups that can run here
(GPU type matches the local device, or an --endpoint serves the model) -> drive each group
(validate/groups.py: dedicated groups, then sharing groups, each set of a sharing group hosting
all its models at once) -> report: a group passes when achieved >= 95% of planned and >= 99% of
requests met the SLO (load/verdict.py).

A group that cannot run here is `skipped` (never passed); a group whose replica or server fails
is `error` with whatever it measured before. The report is written after every group, so a run
cut short still leaves what it measured.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from gpumix.planner import reading
from gpumix.planner.catalog import load_catalog
from gpumix.planner.checker import LOAD_CODES, check_plan
from gpumix.planner.errors import GpumixError, InputError
from gpumix.planner.problem import Config, Problem, config_of
from gpumix.planner.workload import Workload, load_workload, read_structured
from gpumix.profiler.load.verdict import MIN_RATE_FRACTION, MIN_SLO_ATTAINMENT, Status
from gpumix.profiler.runtime.spec import read_profiles
from gpumix.profiler.validate.groups import (Group, announce, failure_line, group_row, member_rows, plan_groups,
                                             member_spec, run_group, skip_reason)
from gpumix.profiler.validate.options import ValidateOptions

__all__ = ["ValidateOptions", "validate", "check", "read_plan", "read_profiles", "MIN_RATE_FRACTION", "MIN_SLO_ATTAINMENT"]
LOAD_NOTE = "each validated group runs `replicas_run` replica(s), each at the plan's per-replica load (routes rps / count)"


# --- inputs -------------------------------------------------------------------------------------

def read_plan(path: Path) -> dict:
    doc = read_structured(path, "plan")
    if not isinstance(doc, dict):
        raise InputError(str(path), "", "a plan must be a JSON object")
    if not isinstance(doc.get("replicas"), list):
        raise InputError(str(path), "replicas", "missing or not a list")
    if not isinstance(doc.get("inputs") or {}, dict):
        raise InputError(str(path), "inputs", "must be a mapping (workload, profiles)")
    for key in ("workload", "profiles"):
        if not isinstance((doc.get("inputs") or {}).get(key) or "", str):
            raise InputError(str(path), f"inputs.{key}", "must be a file name")
    return doc


def workload_path(plan_path: Path, plan: dict, given: Path | None) -> Path:
    if given is not None:
        return given
    w = (plan.get("inputs") or {}).get("workload")
    for cand in ([Path(w), plan_path.parent / w] if isinstance(w, str) else []):
        if cand.is_file():
            return cand
    raise InputError(str(plan_path), "inputs.workload",
                     f"{w!r} is not a readable workload file; pass WORKLOAD")


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _list(v) -> list:
    """v when it is a list, else none: a malformed field is the checker's finding, not a crash here."""
    return v if isinstance(v, list) else []


def _hashable(v) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def plan_problem(plan: dict, workload: Workload) -> Problem:
    """The problem the plan claims to solve: the workload's demand, the plan's own capacities
    (routes' max_rps) and prices, so the checker can run without the profiles the plan used."""
    capacity: dict[Config, dict] = {}
    price: dict[str, float] = {}
    shared = [(g, m) for g in _list(plan.get("shared")) if isinstance(g, dict)
              for m in _list(g.get("models")) if isinstance(m, dict)]
    for g, m in [(g, g) for g in plan["replicas"] if isinstance(g, dict)] + shared:
        c = config_of({**m, "gpu": g.get("gpu"), "tp": g.get("tp")})
        if not _hashable(c):  # a list or mapping where a name belongs: the checker's schema finding says so
            continue
        if isinstance(c.gpu, str):
            p = g.get("price_per_gpu_hour")
            price[c.gpu] = float(p) if _num(p) else 0.0
        for r in _list(m.get("routes")):
            if isinstance(r, dict) and _num(r.get("max_rps")) and r["max_rps"] > 0 \
                    and _hashable((r.get("input_tokens"), r.get("output_tokens"))):
                capacity.setdefault(c, {})[(r.get("input_tokens"), r.get("output_tokens"))] = r["max_rps"]
    mu = plan.get("max_utilization")
    return Problem(
        models=tuple(m.name for m in workload.models),
        buckets={m.name: tuple(b.key for b in m.buckets) for m in workload.models},
        demand={(m.name, b.key): m.demand(b) for m in workload.models for b in m.buckets},
        configs=tuple(capacity), capacity=capacity, price=price,
        available={g: None for g in price},
        max_utilization=float(mu) if _num(mu) and mu > 0 else workload.max_utilization)


def _step_fits(plan_path: Path, plan: dict) -> dict | None:
    """The measured decode steps of the profile the plan was made from (S4), when it is still there."""
    from gpumix.planner.profiles import decode_step_fits

    given = (plan.get("inputs") or {}).get("profiles")
    if not isinstance(given, str):
        return None
    path = Path(given) if Path(given).is_absolute() or reading.exists(given) else plan_path.parent / given
    try:
        return decode_step_fits(path) if reading.exists(path) else None
    except GpumixError:
        return None


def checker_inputs(plan_path: Path, plan: dict, workload: Workload) -> tuple[Problem, object]:
    """(problem, sharing model) to check the plan against; the sharing model (memory of shared
    groups) needs the workload's shapes and the GPUs' sizes, so only plans with `shared` get one."""
    problem = plan_problem(plan, workload)
    if not plan.get("shared"):
        return problem, None
    from gpumix.planner.sharing import build_sharing

    return problem, build_sharing(workload, load_catalog(), problem, _step_fits(plan_path, plan))


def check(plan_path: Path, plan: dict, workload: Workload) -> list[str]:
    """The checker's findings: load/demand/cost ones (checker LOAD_CODES) come back as notes; any
    other is bad input (InputError naming the field, exit 2)."""
    problem, sharing = checker_inputs(plan_path, plan, workload)
    notes = []
    for f in check_plan(plan, problem, sharing=sharing):
        if f.code not in LOAD_CODES:
            raise InputError(str(plan_path), f.where, f.message)
        notes.append(str(f))
    return notes


# --- where groups can run -----------------------------------------------------------------------

def local_gpu_name(opts: ValidateOptions) -> str:
    if opts.gpu_name:
        return opts.gpu_name
    from gpumix.profiler.measure.profile import device_name

    return device_name(opts.device)


def here_and_served(opts: ValidateOptions, notes: list[str]) -> tuple[str | None, list[str] | None]:
    """(GPU type the groups must match, None: any; models the endpoint lists, None: unknown)."""
    if not opts.endpoint:
        return local_gpu_name(opts), None
    from gpumix.profiler.load.client import AuthError, list_models

    try:
        ep = opts.endpoint_target()
    except ValueError as e:
        raise InputError("gpumix validate", "--endpoint", str(e)) from None
    try:
        return opts.gpu_name, list_models(ep)
    except AuthError as e:  # every request would fail the same way
        raise InputError("gpumix validate", "--api-key", str(e)) from None
    except (OSError, ValueError) as e:
        notes.append(f"endpoint {ep.base}: cannot list models ({e}); trying every group")
        return opts.gpu_name, None


# --- the run ------------------------------------------------------------------------------------

def drive(g: Group, opts: ValidateOptions, profiles: list[dict], here: str | None,
          served: list[str] | None, report: dict, progress: Callable[[str], None]) -> None:
    """Run (or skip) one group and add its rows, counts and failures to the report."""
    rows = member_rows(g)
    why = skip_reason(g, opts, here, served)
    if why:
        for r in rows.values():
            r.update(status=Status.SKIPPED, passed=None, reasons=[why])
        entry = {**group_row(g), "status": Status.SKIPPED, "passed": None, "reasons": [why]} if g.sharing else None
        report["skipped"] += len(rows)
    else:
        progress(announce(g, opts))
        entry = run_group(g, opts, profiles, rows)
        report["validated"] += sum(1 for r in rows.values() if r["status"] != Status.SKIPPED)
        report["failures"] += [failure_line(g, r) for r in rows.values() if r["passed"] is False]
    report["groups"] += rows.values()
    if entry is not None:
        report["shared"].append(entry)


def refuse_unrunnable(plan_path: Path, plan: dict, workload: Workload) -> None:
    """In-process validation runs the torch runtime: a group it cannot build (a quantized precision,
    MLA, ...) is bad input here (exit 2), not a skip, since no device would run it."""
    from gpumix.profiler.runtime.spec import runtime_refusal

    shapes = {m.name: m.shape for m in workload.models}
    members = [(f"replicas[{i}]", g) for i, g in enumerate(plan["replicas"]) if isinstance(g, dict)]
    members += [(f"shared[{i}].models[{j}]", m) for i, g in enumerate(plan.get("shared") or [])
                if isinstance(g, dict) for j, m in enumerate(g.get("models") or []) if isinstance(m, dict)]
    for where, g in members:
        try:
            precision = config_of({**g, "gpu": "", "tp": 1}).precision
        except ValueError as e:
            raise InputError(str(plan_path), where, str(e)) from None
        why = runtime_refusal(shapes.get(g.get("model")), precision)
        if why:
            raise InputError(str(plan_path), where, why)


def refuse_too_large(groups: list[Group], opts: ValidateOptions, profiles: list[dict], here: str | None,
                     served: list[str] | None) -> None:
    """Before any group runs: a group whose replicas, as they would be built, need more memory than
    --memory-budget allows is bad input (exit 2), not a process the kernel kills at its limit."""
    from gpumix.profiler.runtime.memory import refuse_if_too_large, spec_footprint

    for g in groups:
        if skip_reason(g, opts, here, served):
            continue
        try:
            fps = [spec_footprint(member_spec(t, opts, profiles)[0]) for t in g.members]
        except (LookupError, AttributeError):
            continue  # no shape or no workload model: the group reports it when it runs
        n = max(1, min(opts.replicas, g.count))
        cuda = opts.device.startswith("cuda")
        what = " + ".join(t.label for t in g.members)
        # CUDA: set j on its own GPUs, a set's members on one device; CPU: everything in one RAM
        refuse_if_too_large("gpumix validate", what, fps if cuda else fps * n, opts.device,
                            opts.memory_budget_gb, same_device=True)


def validate(plan_path: Path, workload_arg: Path | None, opts: ValidateOptions,
             write: Callable[[dict], None] = lambda doc: None,
             progress: Callable[[str], None] = lambda msg: None) -> dict:
    """The report (see docs/validate.md); `write(report)` is called after every group."""
    plan = read_plan(plan_path)
    wl_path = workload_path(plan_path, plan, workload_arg)
    workload = load_workload(wl_path, load_catalog(), need_shapes=False)
    notes = [f"plan checker: {v}" for v in check(plan_path, plan, workload)]
    if not opts.endpoint:
        refuse_unrunnable(plan_path, plan, workload)
    profiles_path = opts.profiles or (plan.get("inputs") or {}).get("profiles")
    profiles = [] if opts.endpoint else read_profiles(profiles_path)
    here, served = here_and_served(opts, notes)
    report = {
        "plan": str(plan_path), "workload": str(wl_path),
        "mode": "endpoint" if opts.endpoint else "in-process",
        "endpoint": opts.endpoint, "device": None if opts.endpoint else opts.device, "gpu_name": here,
        "load": {"arrivals": opts.arrivals, "gamma_shape": opts.gamma_shape if opts.arrivals == "gamma" else None,
                 "duration_s": opts.duration_s, "drain_s": opts.drain, "seed": opts.seed,
                 "replicas_per_group": opts.replicas, "note": LOAD_NOTE},
        "criteria": {"min_rate_fraction": opts.min_rate_fraction,
                     "min_slo_attainment": opts.min_slo_attainment},
        "profiles": profiles_path if profiles else None,
        "notes": notes, "groups": [], "passed": False, "validated": 0, "skipped": 0, "failures": [],
    }
    if plan.get("shared"):
        report["shared"] = []
    groups = list(plan_groups(plan, workload))
    if not opts.endpoint:
        refuse_too_large(groups, opts, profiles, here, served)
    for g in groups:
        drive(g, opts, profiles, here, served, report, progress)
        write(report)
    report["passed"] = report["validated"] > 0 and not report["failures"]
    if report["validated"] == 0:
        report["failures"].append("no group of the plan could be validated here"
                                  + (f" (GPU {here})" if here else ""))
    write(report)
    return report
