"""`gpumix export` (a plan as launch files) and `gpumix sweep` (cost vs demand / SLO, with a plot).

  gpumix export PLAN.json [--format vllm|k8s|skypilot|all ...] [--out DIR]
  gpumix sweep [WORKLOAD] --scale 0.5,1,2 [--tpot-ms 40,60] [--plot FILE.png] [--format table|json]

matplotlib is imported only inside cli/plot.py: planning never needs it (extra `gpumix[plot]`).
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpumix.cli import render
from gpumix.cli.common import EfficiencyOpt, cannot_write, clean, err, fail, one_line, out, positive_floats, usage

PLOT_SUFFIXES = (".png", ".svg")


class ExportFormat(str, Enum):
    vllm = "vllm"
    k8s = "k8s"
    skypilot = "skypilot"
    all = "all"


class SweepFormat(str, Enum):
    table = "table"
    json = "json"


def export(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON written by `gpumix plan`.", metavar="PLAN")],
    fmt: Annotated[list[ExportFormat], typer.Option(
        "--format", "-f", help="vllm: serve scripts; k8s: Deployments and Services; skypilot: task YAML. "
                               "Repeat it, or give all.")] = [ExportFormat.all],  # noqa: B006 (typer default)
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder to write into (created). The whole "
                                          "tree is written first and then swapped in; files of an earlier "
                                          "export that this one no longer writes are removed, your other "
                                          "files are kept (.gpumix-export.json lists what gpumix wrote).")]
    = Path("gpumix-export"),
    image: Annotated[str, typer.Option("--image", help="Container image for the k8s Deployments of NVIDIA "
                                       "GPUs (pin a version in production).")] = "vllm/vllm-openai:latest",
    rocm_image: Annotated[str, typer.Option("--rocm-image", help="Container image for AMD GPUs (MI300X) in "
                                            "k8s and SkyPilot.")] = "rocm/vllm:latest",
    spot_label: Annotated[str, typer.Option(
        "--spot-label", metavar="KEY=VALUE", help="Node label of spot nodes: k8s spot groups select it and "
                                                  "tolerate a NoSchedule taint of the same key and value "
                                                  "(EKS: eks.amazonaws.com/capacityType=SPOT).")]
    = "cloud.google.com/gke-spot=true",
):
    """Write launch files for a plan: per replica group a vLLM command, Kubernetes manifests or a
    SkyPilot task, and router-weights.json (each group's share of each bucket's traffic)."""
    from gpumix.planner.errors import GpumixError
    from gpumix.planner.export import FORMATS
    from gpumix.planner.export import export as build
    from gpumix.planner.export.tree import write_tree
    from gpumix.planner.workload import read_structured

    formats = FORMATS if ExportFormat.all in fmt else tuple(dict.fromkeys(f.value for f in fmt))
    label = _label(spot_label)
    try:
        files = build(read_structured(plan_file, "plan"), formats, str(plan_file), image, rocm_image, label)
    except GpumixError as e:
        raise fail(e) from None
    try:  # nothing is written before the whole plan exported
        result = write_tree(out_dir, files)
    except OSError as e:
        raise fail(cannot_write(out_dir, "--out", e)) from None
    removed = f"; {len(result.removed)} stale files of the last export removed" if result.removed else ""
    out.print(f"{len(files)} files written to {clean(result.root)} ({', '.join(formats)} and router-weights.json)"
              f"{removed}", markup=False)
    if result.kept:
        err.print(f"gpumix: note: kept {len(result.kept)} file(s) of the last export that this plan no longer "
                  f"has, edited since: {clean(', '.join(result.kept[:5]))}{' ...' if len(result.kept) > 5 else ''}",
                  markup=False, soft_wrap=True)


# a Kubernetes label key ([prefix/]name) and value
_LABEL_KEY = r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_VALUE = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?"


def _label(text: str) -> tuple[str, str]:
    import re

    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(_LABEL_KEY, key) or not re.fullmatch(_LABEL_VALUE, value):
        raise usage("--spot-label", f"expected KEY=VALUE, a Kubernetes node label, got {text[:100]!r}")
    return key, value


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
                                       "pip install 'gpumix\\[plot]').")] = None,
    fmt: Annotated[SweepFormat, typer.Option("--format", help="table, or json (one record a point) on stdout.")]
    = SweepFormat.table,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or notes.")] = False,
    efficiency: EfficiencyOpt = None,
):
    """Plan a workload at several demand scales and/or TPOT SLOs; a table of cost, GPU mix and the
    best single-GPU-type cost per point, and optionally a plot."""
    from gpumix.planner.errors import GpumixError
    from gpumix.solvers.pipeline import PlanOptions
    from gpumix.solvers.sweep import sweep_points

    scales, tpots = positive_floats(scale, "--scale"), positive_floats(tpot_ms, "--tpot-ms")
    if scales is None and tpots is None:
        raise usage("--scale/--tpot-ms", "give at least one list of points")
    if plot is not None:
        _check_plot(plot)
    options = PlanOptions(time_limit=time_limit, fill_estimates=fill_estimates, catalog=catalog,
                          efficiency=efficiency)
    try:
        results = _plan_points(workload, profiles, options, sweep_points(scales, tpots), quiet)
    except GpumixError as e:
        raise fail(e) from None
    if fmt is SweepFormat.json:
        sys.stdout.write(json.dumps({"points": [r.as_dict() for r in results]}, indent=2) + "\n")
    else:
        render.sweep_table(out, results)
    if plot is not None:
        from gpumix.cli.plot import plot_sweep

        try:
            plot_sweep(results, plot)
        except OSError as e:
            err.print(f"gpumix: error: {one_line(f'--plot: cannot write {plot}: {e.strerror}')}", markup=False,
                      soft_wrap=True)
            raise typer.Exit(2) from None
        (err if fmt is SweepFormat.json else out).print(f"plot written to {clean(plot)}", markup=False)


def _check_plot(plot: Path) -> None:
    if plot.suffix.lower() not in PLOT_SUFFIXES:
        raise usage("--plot", f"expected a .png or .svg file, got {plot.name!r}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise usage("--plot", "needs matplotlib: pip install 'gpumix[plot]'") from None


def _plan_points(workload, profiles, options, points, quiet: bool) -> list:
    """plan_point for each point, under a progress bar unless quiet."""
    from gpumix.solvers.sweep import plan_point

    if quiet:
        return [plan_point(workload, profiles, options, p) for p in points]
    from rich.progress import Progress

    results = []
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("planning", total=len(points))
        for p in points:
            bar.update(task, description=f"scale {p.scale:g}"
                       + (f", TPOT {p.tpot_ms:g} ms" if p.tpot_ms is not None else ""))
            results.append(plan_point(workload, profiles, options, p))
            bar.advance(task)
    return results


def register(app: typer.Typer) -> None:
    for command in (export, sweep):
        app.command()(command)
