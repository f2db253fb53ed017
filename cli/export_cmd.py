"""`gpumix export` (a plan as launch files) and `gpumix sweep` (cost vs demand / SLO, with a plot).

matplotlib is imported only inside plot_sweep: planning never needs it (extra `gpumix[plot]`).
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

PLOT_SUFFIXES = (".png", ".svg")


class ExportFormat(str, Enum):
    vllm = "vllm"
    k8s = "k8s"
    skypilot = "skypilot"
    all = "all"


class SweepFormat(str, Enum):
    table = "table"
    json = "json"


def _fail(e: Exception) -> typer.Exit:
    from gpumix.cli.app import _fail as fail
    return fail(e)


def _usage(field: str, message: str) -> typer.Exit:
    err.print(f"gpumix: error: {field}: {message}", markup=False, soft_wrap=True)
    return typer.Exit(2)


def export(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON written by `gpumix plan`.", metavar="PLAN")],
    fmt: Annotated[list[ExportFormat], typer.Option(
        "--format", "-f", help="vllm: serve scripts; k8s: Deployments and Services; skypilot: task YAML. "
                               "Repeat it, or give all.")] = [ExportFormat.all],  # noqa: B006 (typer default)
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into (created; files "
                                          "overwritten).")] = Path("gpumix-export"),
    image: Annotated[str, typer.Option("--image", help="Container image for the k8s Deployments "
                                       "(pin a version in production).")] = "vllm/vllm-openai:latest",
):
    """Write launch files for a plan: per replica group a vLLM command, Kubernetes manifests or a
    SkyPilot task, and router-weights.json (each group's share of each bucket's traffic)."""
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.planner.export import FORMATS
    from gpumix.planner.export import export as build
    from gpumix.planner.plan import write_atomic
    from gpumix.planner.workload import read_structured

    formats = FORMATS if ExportFormat.all in fmt else tuple(dict.fromkeys(f.value for f in fmt))
    try:
        files = build(read_structured(plan_file), formats, str(plan_file), image)
        for rel, text in sorted(files.items()):
            write_atomic(out_dir / rel, text)
    except GpumixError as e:
        raise _fail(e) from None
    except OSError as e:
        raise _fail(InputError(str(out_dir), "--out", f"cannot write: {e.strerror}")) from None
    for rel in sorted(files):
        if rel.endswith(".sh"):
            (out_dir / rel).chmod(0o755)
    out.print(f"{len(files)} files written to {out_dir} ({', '.join(formats)} and router-weights.json)")


def _floats(text: str | None, option: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise _usage(option, f"expected comma-separated numbers, got {text!r}") from None
    if not values or any(not v > 0 for v in values):
        raise _usage(option, f"expected positive numbers, got {text!r}")
    return values


def sweep(
    workload: Annotated[Optional[Path], typer.Argument(
        help="Workload file (as for plan). Default: the bundled example.", show_default=False,
        metavar="WORKLOAD")] = None,
    scale: Annotated[Optional[str], typer.Option(
        "--scale", metavar="LIST", help="Demand multipliers, e.g. 0.25,0.5,1,2,4 (every model's rate_rps).")] = None,
    tpot_ms: Annotated[Optional[str], typer.Option(
        "--tpot-ms", metavar="LIST", help="TPOT SLOs in ms for every model, e.g. 40,60,120. With --scale: "
                                          "the grid of both.")] = None,
    profiles: Annotated[Optional[Path], typer.Option("--profiles", metavar="FILE",
                                                     help="Throughput table JSON, as for plan.")] = None,
    catalog: Annotated[Optional[Path], typer.Option(
        "--catalog", metavar="FILE", help="SkyPilot catalog CSV: instance shapes and prices.")] = None,
    fill_estimates: Annotated[bool, typer.Option("--fill-estimates", help="As for plan.")] = False,
    time_limit: Annotated[float, typer.Option("--time-limit", min=0.1,
                                              help="Solver time limit per point, seconds.")] = 120.0,
    plot: Annotated[Optional[Path], typer.Option(
        "--plot", metavar="FILE", help="Draw cost vs demand/SLO to FILE.png or FILE.svg (needs matplotlib: "
                                       "pip install 'gpumix[plot]').")] = None,
    fmt: Annotated[SweepFormat, typer.Option("--format", help="table, or json (one record a point) on stdout.")]
    = SweepFormat.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes.")] = False,
):
    """Plan a workload at several demand scales and/or TPOT SLOs; a table of cost, GPU mix and the
    best single-GPU-type cost per point, and optionally a plot."""
    from gpumix.planner.errors import GpumixError
    from gpumix.solvers.pipeline import PlanOptions
    from gpumix.solvers.sweep import plan_point, sweep_points

    scales, tpots = _floats(scale, "--scale"), _floats(tpot_ms, "--tpot-ms")
    if scales is None and tpots is None:
        raise _usage("--scale/--tpot-ms", "give at least one list of points")
    if plot is not None:
        if plot.suffix.lower() not in PLOT_SUFFIXES:
            raise _usage("--plot", f"expected a .png or .svg file, got {plot.name!r}")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise _usage("--plot", "needs matplotlib: pip install 'gpumix[plot]'") from None
    points = sweep_points(scales, tpots)
    options = PlanOptions(time_limit=time_limit, fill_estimates=fill_estimates, catalog=catalog)
    results = []
    try:
        if quiet:
            results = [plan_point(workload, profiles, options, p) for p in points]
        else:
            from rich.progress import Progress
            with Progress(console=err, transient=True) as bar:
                task = bar.add_task("planning", total=len(points))
                for p in points:
                    bar.update(task, description=f"scale {p.scale:g}"
                               + (f", TPOT {p.tpot_ms:g} ms" if p.tpot_ms is not None else ""))
                    results.append(plan_point(workload, profiles, options, p))
                    bar.advance(task)
    except GpumixError as e:
        raise _fail(e) from None
    if fmt is SweepFormat.json:
        sys.stdout.write(json.dumps({"points": [r.as_dict() for r in results]}, indent=2) + "\n")
    else:
        sweep_table(out, results)
    if plot is not None:
        try:
            plot_sweep(results, plot)
        except OSError as e:
            err.print(f"gpumix: error: --plot: cannot write {plot}: {e.strerror}", markup=False)
            raise typer.Exit(2) from None
        (err if fmt is SweepFormat.json else out).print(f"plot written to {plot}")


def _mix(gpus) -> str:
    return " ".join(f"{n}x{g}" for g, n in gpus) or "-"


def sweep_table(console: Console, results) -> None:
    t = Table(show_edge=False, pad_edge=False)
    for col, just in (("scale", "right"), ("TPOT ms", "right"), ("status", "left"), ("$/h", "right"),
                      ("GPU mix", "left"), ("best single type", "left"), ("saves", "right")):
        t.add_column(col, justify=just)
    for r in results:
        tpot = "-" if r.point.tpot_ms is None else f"{r.point.tpot_ms:g}"
        if r.cost is None:
            t.add_row(f"{r.point.scale:g}", tpot, r.status, "-", r.error, "-", "-")
            continue
        best, saves = "none serves all", "-"
        if r.best_single is not None:
            best = f"{r.best_single[0]} ${r.best_single[1]:,.2f}"
            saves = f"{1 - r.cost / r.best_single[1]:.0%}" if r.best_single[1] > 0 else "-"
        t.add_row(f"{r.point.scale:g}", tpot, r.status, f"${r.cost:,.2f}", _mix(r.gpus), best, saves)
    console.print(t)


def plot_sweep(results, path: Path) -> None:
    """Cost vs the swept axis (demand scale, else TPOT): one line per TPOT on a grid, the best single
    GPU type dashed, infeasible points left out. A single line also gets a panel of its GPU mix."""
    from matplotlib.figure import Figure  # lazy: the optional `plot` extra; no pyplot, no global state

    scales = sorted({r.point.scale for r in results})
    by_scale = len(scales) > 1
    series: dict = {}
    for r in results:
        series.setdefault(r.point.tpot_ms if by_scale else None, []).append(r)
    one = len(series) == 1
    fig = Figure(figsize=(7, 5.6 if one else 4.2), layout="constrained")
    ax, mix_ax = (fig.subplots(2, 1, sharex=True, height_ratios=[3, 2]) if one else (fig.add_subplot(), None))
    x_of = (lambda r: r.point.scale) if by_scale else (lambda r: r.point.tpot_ms)
    for i, (key, rs) in enumerate(sorted(series.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))):
        color, suffix = f"C{i}", ("" if key is None else f", TPOT {key:g} ms")
        ok = [r for r in rs if r.cost is not None]
        ax.plot([x_of(r) for r in ok], [r.cost for r in ok], "o-", color=color, label=f"gpumix plan{suffix}")
        single = [r for r in ok if r.best_single is not None]
        if single:
            ax.plot([x_of(r) for r in single], [r.best_single[1] for r in single], "s--", color=color, alpha=0.6,
                    label=f"best single GPU type{suffix}")
        for r in rs:
            if r.cost is None:
                ax.axvline(x_of(r), color=color, alpha=0.3, linestyle=":", label=f"{r.status}{suffix}")
    ax.set_ylabel("$ per hour")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    keep = {lab: h for h, lab in zip(handles, labels)}  # one legend entry per label
    ax.legend(keep.values(), keep.keys(), fontsize=7)
    ax.set_title("Fleet cost: gpumix plan vs best single GPU type", fontsize=10)
    if mix_ax is not None:
        ok = [r for r in results if r.cost is not None]
        types = sorted({g for r in ok for g, _ in r.gpus})
        xs = [x_of(r) for r in ok]
        if by_scale:
            widths = [x * 0.35 for x in xs]  # equal-looking bars on a log axis
        else:
            gap = min((b - a for a, b in zip(sorted(xs), sorted(xs)[1:])), default=10)
            widths = [gap * 0.6] * len(xs)
        bottom = [0] * len(ok)
        for j, g in enumerate(types):
            n = [dict(r.gpus).get(g, 0) for r in ok]
            mix_ax.bar(xs, n, widths, bottom=bottom, label=g, color=f"C{j % 10}", alpha=0.8)
            bottom = [b + k for b, k in zip(bottom, n)]
        mix_ax.set_ylabel("GPUs in the plan")
        mix_ax.grid(True, axis="y", alpha=0.3)
        mix_ax.legend(fontsize=7, ncols=min(len(types), 4) or 1)
    bottom_ax = mix_ax if mix_ax is not None else ax
    if by_scale:
        bottom_ax.set_xscale("log", base=2)
        bottom_ax.set_xticks(scales, [f"{s:g}" for s in scales])
        bottom_ax.minorticks_off()
        bottom_ax.set_xlabel("demand scale (x every model's rate_rps)")
    else:
        bottom_ax.set_xlabel("TPOT SLO (ms)")
    fig.savefig(path)


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command()(sweep)
