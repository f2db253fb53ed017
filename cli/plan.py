"""`gpumix plan`, `check`, `estimate` and `catalog`: planning a fleet and the inputs it plans from.

  gpumix plan [WORKLOAD] [--profiles P.json] [--out PLAN.json] [--format table|json] ...
  gpumix check PLAN.json [WORKLOAD]
  gpumix estimate [WORKLOAD] [--out PROFILES.json] [--concurrency N[,N...]]
  gpumix catalog gpus|models
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpumix import __version__ as VERSION
from gpumix.cli import render
from gpumix.cli.common import (CatalogOpt, EfficiencyOpt, FillOpt, ProfilesOpt, WorkloadArg, cannot_write, clean,
                               dim, err, fail, one_line, out, positive_ints)


class Format(str, Enum):
    table = "table"
    json = "json"


def plan(
    workload: WorkloadArg = None,
    profiles: ProfilesOpt = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the plan JSON here (atomically).")] = None,
    time_limit: Annotated[float, typer.Option(
        "--time-limit", min=0.1, help="Solver time limit in seconds; on timeout the best plan so far "
                                      "is returned with status 'feasible' and its gap.")] = 120.0,
    fmt: Annotated[Format, typer.Option("--format", help="table: a report for people; json: the plan on stdout.")] = Format.table,
    fill_estimates: FillOpt = False,
    whole_buckets: Annotated[bool, typer.Option(
        "--whole-buckets", help="Send each bucket to one GPU type x TP (Melange-style routing) instead of "
                                "splitting it; for comparison.")] = False,
    mip_gap: Annotated[float, typer.Option("--mip-gap", min=0.0, max=0.5,
                                           help="Relative gap at which a plan counts as optimal.")] = 1e-4,
    no_baseline: Annotated[bool, typer.Option("--no-baseline", help="Skip the best single-GPU-type comparison "
                                              "(computed by default for up to 100 models).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or notes on stderr.")] = False,
    current: Annotated[Optional[Path], typer.Option(
        "--current", metavar="PLAN", help="The running plan: re-plan for the new workload at least cost plus "
                                          "churn, and print what to start, stop and keep.")] = None,
    churn_cost: Annotated[float, typer.Option(
        "--churn-cost", min=0.0, help="With --current: $/h-equivalent charged per replica started or "
                                      "moved.")] = 1.0,
    spare_nodes: Annotated[int, typer.Option(
        "--spare-nodes", min=0, help="Still meet all demand after losing any N nodes (needs instances).")] = 0,
    allow_partial: Annotated[bool, typer.Option(
        "--allow-partial", help="When demand exceeds availability, serve the largest share of the "
                                "worst-served model first, then the cheapest; report the share per model.")] = False,
    spot_share: Annotated[float, typer.Option(
        "--spot-share", min=0.0, max=1.0, help="Let at most this share of each model's traffic run on spot "
                                               "instances (needs instances with spot prices).")] = 0.0,
    catalog_csv: CatalogOpt = None,
    share_gpus: Annotated[bool, typer.Option(
        "--share-gpus", help="Let several models share a GPU set (within memory and time; docs/sharing.md): "
                             "long tails of small, lightly used models cost far less.")] = False,
    efficiency: EfficiencyOpt = None,
    start_cost: Annotated[Optional[float], typer.Option(
        "--start-cost", min=0.0, max=1e5, metavar="$",
        help="Workloads with periods: $ charged per replica started, for every configuration (default: "
             "the GPU time lost loading the weights; docs/schedule.md).")] = None,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", metavar="FILE", help="Workloads with periods: draw demand per model, GPUs per type and cost "
                                       "per period to FILE.png or FILE.svg (needs matplotlib: "
                                       "pip install 'gpumix\\[plot]').")] = None,
):
    """Size and route a fleet: replicas per (model, GPU type, TP), routing per request bucket; for a
    workload with periods, a replica schedule over them."""
    from gpumix.cli.export import _check_plot
    from gpumix.planner.errors import GpumixError
    from gpumix.planner.plan import dumps, write_atomic
    from gpumix.solvers.pipeline import PlanOptions, plan_workload

    if plot is not None:
        _check_plot(plot)
    try:
        result = plan_workload(workload, profiles, PlanOptions(
            time_limit=time_limit, mip_gap=mip_gap, fill_estimates=fill_estimates,
            whole_buckets=whole_buckets, baseline=not no_baseline, progress=None if quiet else dim,
            current=current, churn_cost=churn_cost, spare_nodes=spare_nodes, allow_partial=allow_partial,
            spot_share=spot_share, catalog=catalog_csv, share_gpus=share_gpus,
            efficiency=efficiency, start_cost=start_cost))
        if plot is not None and result.plan.get("periods") is None:
            from gpumix.planner.errors import InputError
            raise InputError(str(workload or "bundled example"), "--plot", "draws schedules: the workload has "
                             "no periods (use `gpumix sweep --plot` for one state)")
        text = dumps(result.plan)
    except GpumixError as e:
        raise fail(e) from None
    # --plot and --out succeed together or leave both as they were: the plot is drawn in memory
    # first, written, then the plan; a failing --out puts the old plot back.
    undo_plot = _write_plot(result.plan, plot) if plot is not None else None
    try:
        if out_path is not None:
            write_atomic(out_path, text)
    except OSError as e:
        if undo_plot is not None:
            undo_plot()
        raise fail(cannot_write(out_path, "--out", e)) from None
    if not quiet:
        for note in result.notes:
            err.print(f"note: {one_line(note)}", markup=False, soft_wrap=True)
    if fmt is Format.json:
        sys.stdout.write(text)
    else:
        render.plan_report(out, result)
        if out_path is not None:
            out.print(f"plan written to {clean(out_path)}", markup=False)
    if plot is not None:
        (err if fmt is Format.json else out).print(f"plot written to {clean(plot)}", markup=False)


def _write_plot(plan: dict, plot: Path):
    """Draw the schedule to `plot` (atomically); returns what puts the old file back. Bad input or
    an unwritable path: one line, exit 2, nothing written."""
    import os
    import tempfile

    from gpumix.cli.plot import plot_schedule
    from gpumix.planner.plan import write_atomic

    with tempfile.TemporaryDirectory(prefix="gpumix-plot-") as tmp:
        drawn = Path(tmp) / ("plot" + plot.suffix.lower())
        plot_schedule(plan, drawn)
        data = drawn.read_bytes()
    target = Path(os.path.realpath(plot))
    try:
        old = target.read_bytes() if target.is_file() else None
    except OSError:
        old = None
    try:
        write_atomic(plot, data)
    except OSError as e:
        raise fail(cannot_write(plot, "--plot", e)) from None

    def undo() -> None:
        try:
            if old is None:
                target.unlink(missing_ok=True)
            else:
                write_atomic(target, old)
        except OSError:
            pass
    return undo


def check(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON to check.", metavar="PLAN")],
    workload: Annotated[Optional[Path], typer.Argument(
        help="Workload the plan must serve. Default: the plan's inputs.workload (as written, else next to "
             "the plan), else the bundled example.", show_default=False, metavar="WORKLOAD")] = None,
    profiles: ProfilesOpt = None,
    fill_estimates: FillOpt = False,
    catalog_csv: CatalogOpt = None,
    efficiency: EfficiencyOpt = None,
    start_cost: Annotated[Optional[float], typer.Option(
        "--start-cost", min=0.0, max=1e5, metavar="$",
        help="Plans with periods: the $ per replica started they were planned with (default: the plan's "
             "inputs.start_cost, else the workload's start costs).")] = None,
):
    """Check a plan against a workload with the independent plan checker (exit 1 on a violation).
    Without WORKLOAD, the plan's own inputs.workload (else the bundled example, with a note). A plan
    with periods is checked period by period, with its starts and totals (docs/schedule.md)."""
    from gpumix.planner.checker import check_periods, check_plan
    from gpumix.planner.checker.findings import Finding
    from gpumix.planner.errors import GpumixError
    from gpumix.planner.sharing import sharing_for
    from gpumix.planner.workload import read_structured
    from gpumix.solvers.pipeline import load_problem

    try:
        doc = read_structured(plan_file, "plan")
        if workload is None:
            workload, note = plan_workload_file(plan_file, doc)
            if note:
                err.print(one_line(f"note: {note}"), markup=False, soft_wrap=True)
            if profiles is None and workload is not None:  # the capacities the plan was made from, too
                profiles, fill_estimates = plan_profiles_file(plan_file, doc, fill_estimates)
        wl, problem, _ = load_problem(workload, profiles, fill_estimates, catalog_csv,
                                      efficiency_path=efficiency)
        sharing = sharing_for(wl, problem, profiles, efficiency) if isinstance(doc, dict) and doc.get("shared") else None
        schedule = None
        if wl.periods is not None:
            from gpumix.planner.catalog import load_catalog
            from gpumix.planner.efficiency import with_efficiency
            from gpumix.planner.schedule import build_schedule

            if start_cost is None and isinstance(doc, dict):
                given = (doc.get("inputs") or {}).get("start_cost") if isinstance(doc.get("inputs"), dict) else None
                start_cost = given if isinstance(given, (int, float)) and not isinstance(given, bool) else None
            schedule = build_schedule(wl, problem, with_efficiency(load_catalog(), efficiency), start_cost)
    except GpumixError as e:
        raise fail(e) from None
    if schedule is not None:
        findings = check_periods(doc, schedule)
    elif isinstance(doc, dict) and doc.get("periods") is not None:
        findings = [Finding("schema", "periods", "the plan has periods; its workload has none (pass the workload "
                                                 "it was planned from)")]
    else:
        findings = check_plan(doc, problem, wl.instances, sharing)
    for v in findings:
        err.print(one_line(f"{plan_file}: {v!s}"), markup=False, soft_wrap=True)
    if findings:
        raise typer.Exit(1)
    if schedule is not None:
        out.print(f"{clean(plan_file)}: ok (schedule ${doc['total_cost']:,.2f} over {schedule.total_hours:g} h, "
                  f"{schedule.periods} periods)", markup=False)
        return
    out.print(f"{clean(plan_file)}: ok (cost ${doc['cost_per_hour']:,.2f}/h)", markup=False)


BUNDLED = "bundled example"  # what a plan's inputs.workload says when it planned the bundled example


def plan_workload_file(plan_file: Path, doc) -> tuple[Optional[Path], Optional[str]]:
    """The workload `check PLAN` checks against when none is given: the plan's inputs.workload, as
    written or relative to the plan's folder, when that is a readable file; else the bundled example
    (None) and a note saying so, unless the plan itself was planned from the bundled example."""
    w = ((doc.get("inputs") if isinstance(doc, dict) else None) or {})
    w = w.get("workload") if isinstance(w, dict) else None
    if w == BUNDLED:
        return None, None
    if isinstance(w, str) and w:
        for cand in (Path(w), plan_file.parent / w):
            try:
                if cand.is_file():
                    return cand, None
            except (OSError, ValueError):
                pass
        return None, (f"{plan_file}: inputs.workload {w[:100]!r} is not a readable file; checking against "
                      f"the bundled example (pass WORKLOAD)")
    return None, f"{plan_file}: no inputs.workload; checking against the bundled example (pass WORKLOAD)"


def plan_profiles_file(plan_file: Path, doc, fill: bool) -> tuple[Optional[Path], bool]:
    """(throughput table, fill_estimates) of the plan's `inputs` when its profiles file is readable,
    as written or next to the plan; else (None, fill) and the roofline stands in."""
    inputs = (doc.get("inputs") if isinstance(doc, dict) else None) or {}
    given = inputs.get("profiles") if isinstance(inputs, dict) else None
    if isinstance(given, str) and given:
        for cand in (Path(given), plan_file.parent / given):
            try:
                if cand.is_file():
                    return cand, fill or bool(inputs.get("fill_estimates"))
            except (OSError, ValueError):
                pass
    return None, fill


def estimate(
    workload: WorkloadArg = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the table here.")] = None,
    concurrency: Annotated[Optional[str], typer.Option(
        "--concurrency", metavar="N[,N...]",
        help="Write TTFT, TPOT, tokens/s, weights and KV cache per model x GPU x TP x bucket x "
             "precision at each number of requests in flight (docs/formats.md, 'Latency table'), "
             "instead of the throughput table.")] = None,
    efficiency: EfficiencyOpt = None,
):
    """Write the roofline estimates for a workload: the throughput table (the --profiles format), or
    with --concurrency the latency each configuration gives at N concurrent requests."""
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.errors import GpumixError
    from gpumix.planner.efficiency import with_efficiency
    from gpumix.planner.latency import latency_table
    from gpumix.planner.plan import write_atomic
    from gpumix.planner.profiles import throughput_table
    from gpumix.solvers.pipeline import load_problem

    try:
        levels = positive_ints(concurrency, "gpumix estimate", "--concurrency")
        wl, problem, _ = load_problem(workload, None, efficiency_path=efficiency)
        notes: list[str] = []
        if levels is None:
            table = throughput_table(problem, f"gpumix {VERSION} roofline")
        else:
            table, notes = latency_table(wl, with_efficiency(load_catalog(), efficiency),
                                         tuple(sorted(set(levels))), f"gpumix {VERSION} roofline at concurrency")
        text = json.dumps(table, indent=2) + "\n"
        if out_path is None:
            sys.stdout.write(text)
        else:
            write_atomic(out_path, text)
            err.print(f"{len(table['entries'])} entries written to {clean(out_path)}", markup=False)
        if notes:
            err.print(one_line(f"note: {len(notes)} configurations cannot run and have no entry, e.g. {notes[0]}"),
                      markup=False, soft_wrap=True)
    except GpumixError as e:
        raise fail(e) from None
    except OSError as e:
        raise fail(cannot_write(out_path, "--out", e)) from None


def catalog(
    what: Annotated[str, typer.Argument(help="gpus or models")] = "gpus",
):
    """List the bundled GPU catalog (specs, $/GPU-hour) or model catalog (shapes, parameters)."""
    from gpumix.planner.catalog import load_catalog

    if what not in ("gpus", "models"):
        err.print(f"gpumix: error: catalog: expected 'gpus' or 'models', got {one_line(repr(what))}", markup=False, soft_wrap=True)
        raise typer.Exit(2)
    render.catalog(out, load_catalog(), what)


def register(app: typer.Typer) -> None:
    for command in (plan, check, estimate, catalog):
        app.command()(command)
