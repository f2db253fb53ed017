"""`gpumix simulate`: a discrete-event simulation of a whole plan (profiler/simulate).

  gpumix simulate PLAN.json [WORKLOAD] [--profiles FILE] --duration S [--arrivals poisson|gamma
      --gamma-shape K] [--rate-scale X] [--seed N] [--router plan|least-loaded] [--report R.json]
      [--find-max-utilization [--out WORKLOAD.yaml]]

Exit codes: 0 every simulated group (and model) held; 1 one did not (named on stderr); 2 bad input.
With --find-max-utilization: 0 when a utilization was found for every model, else 1.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from gpumix.cli.common import cannot_write, clean, err, fail_run, out, report_verdict, usage, write_json

CMD = "gpumix simulate"
TABLE_ROWS = 40  # larger plans: only the groups that failed are listed


def _progress(quiet: bool):
    """(progress(total, label) -> tick(n), the rich Progress to stop) on stderr."""
    if quiet:
        return (lambda total, label: (lambda n: None)), None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("simulating {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=err, transient=True)
    bar.start()

    def progress(total: int, label: str):
        task = bar.add_task(label, total=total)
        return lambda n: bar.advance(task, n)
    return progress, bar


def _ms(d: dict | None, q: str) -> str:
    v = (d or {}).get(q)
    return "-" if v is None else f"{v:,.0f}"


def render(report: dict, stats: dict) -> None:
    load = report["load"]
    groups = [g for g in report["groups"] if g["status"] != "skipped"]
    shown = groups if len(groups) <= TABLE_ROWS else [g for g in groups if not g["passed"]]
    t = Table(title=Text(f"simulate {report['plan']} ({load['arrivals']} arrivals, {load['duration_s']:g} s, "
                         f"x{load['rate_scale']:g} load, router {load['router']})"), title_justify="left",
              show_edge=False, pad_edge=False, caption="req/s planned, got: whole group; TTFT, TPOT: p50/p99 ms; "
              "queue: p99 waiting requests", caption_justify="left")
    t.add_column("group", overflow="fold", min_width=14, ratio=1)
    for col in ("req/s", "got", "TTFT", "TPOT", "queue", "in SLO"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("result", no_wrap=True)
    for g in shown:
        name = g["model"] + (f" (shared[{g['shared']}])" if "shared" in g else "")
        planned = g["planned_rps"] * g["replicas_run"]
        t.add_row(Text.assemble(Text(name), "\n", Text(f"{g['gpu']} TP{g['tp']} x{g['count']}", style="dim")),
                  f"{planned:,.2f}", f"{g['achieved_rps']:,.2f}",
                  f"{_ms(g['ttft_ms'], 'p50')}/{_ms(g['ttft_ms'], 'p99')}",
                  f"{_ms(g['tpot_ms'], 'p50')}/{_ms(g['tpot_ms'], 'p99')}", _ms(g["queue_length"], "p99"),
                  f"{g['slo_attainment']:.1%}",
                  Text("passed", style="green") if g["passed"] else Text("FAILED", style="red"))
    if shown:
        out.print(t)
    passed = sum(1 for g in groups if g["passed"])
    models = report["models"]
    verdict = Text("PASSED", style="green") if report["passed"] else Text("FAILED", style="red")
    out.print(Text.assemble(verdict, f": {passed}/{len(groups)} groups and "
                                     f"{sum(1 for m in models if m['passed'])}/{len(models)} models held; "
                                     f"{report['simulation']['replicas']} replicas simulated"))
    err.print(f"simulated {stats['events']:,} events ({stats['steps']:,} engine steps) in {stats['wall_s']:.1f} s: "
              f"{stats['events'] / max(stats['wall_s'], 1e-9):,.0f} events/s on {stats['processes']} process(es)",
              markup=False, style="dim")


def render_found(found) -> None:
    t = Table(title="highest utilization whose p99 TTFT and TPOT meet the SLO", title_justify="left",
              show_edge=False, pad_edge=False)
    for col, just in (("model", "left"), ("planned", "right"), ("max util", "right"), ("TTFT p99", "right"),
                      ("TPOT p99", "right"), ("runs", "right")):
        t.add_column(col, justify=just, overflow="fold" if col == "model" else None)
    for f in found:
        t.add_row(Text(f.model), "-" if f.planned_utilization is None else f"{f.planned_utilization:.0%}",
                  "-" if f.max_utilization is None else f"{f.max_utilization:.1%}",
                  "-" if f.ttft_p99_ms is None else f"{f.ttft_p99_ms:,.0f} ms",
                  "-" if f.tpot_p99_ms is None else f"{f.tpot_p99_ms:,.1f} ms", str(f.tried))
    out.print(t)
    for f in found:
        if f.reason:
            err.print(clean(f"note: {f.model}: {f.reason}"), markup=False, soft_wrap=True)


def simulate(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON written by `gpumix plan --out`.", metavar="PLAN")],
    workload: Annotated[Optional[Path], typer.Argument(
        help="Workload (SLOs, buckets, model shapes). Default: the plan's inputs.workload.",
        show_default=False, metavar="WORKLOAD")] = None,
    profiles: Annotated[Optional[Path], typer.Option(
        "--profiles", help="`gpumix profile` file whose latency fits give the step times (default: the plan's "
                           "inputs.profiles); configurations without a fit use the roofline.")] = None,
    duration: Annotated[Optional[float], typer.Option("--duration", help="Simulated seconds of arrivals.")] = None,
    arrivals: Annotated[str, typer.Option("--arrivals", help="poisson, or gamma (burstier; see --gamma-shape).")] = "poisson",
    gamma_shape: Annotated[float, typer.Option("--gamma-shape", help="Gamma shape of the gaps (< 1: burstier).")] = 0.5,
    rate_scale: Annotated[float, typer.Option("--rate-scale", help="Multiply every model's rate.")] = 1.0,
    seed: Annotated[int, typer.Option("--seed", help="Arrival seed (validate's streams for the same seed).")] = 0,
    router: Annotated[str, typer.Option("--router", help="plan (the plan's routes, even over a group's replicas) "
                                                         "or least-loaded.")] = "plan",
    report_path: Annotated[Optional[Path], typer.Option("--report", help="Write the report JSON here.")] = None,
    find_max: Annotated[bool, typer.Option("--find-max-utilization", help="Per model, the highest utilization "
                                                                          "whose p99 TTFT and TPOT meet the SLO.")] = False,
    out_path: Annotated[Optional[Path], typer.Option("--out", help="With --find-max-utilization: write the workload "
                                                                   "with per-model max_utilization overrides here.")] = None,
    processes: Annotated[Optional[int], typer.Option("--processes", help="Worker processes (default: the CPU "
                                                     "count); the report does not depend on it.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Simulate every replica of the plan (continuous batching, KV limits, the plan's routing) for
    tail latency at cluster scale; the report has validate's schema and verdict."""
    from gpumix.planner.errors import GpumixError

    if duration is None:
        raise usage("--duration", "required: the simulated seconds of arrivals")
    for name, v in (("--duration", duration), ("--rate-scale", rate_scale), ("--gamma-shape", gamma_shape)):
        if not v > 0 or v == float("inf"):
            raise usage(name, f"must be a positive number, got {v:g}")
    if processes is not None and processes < 1:
        raise usage("--processes", f"must be >= 1, got {processes}")
    if out_path is not None and not find_max:
        raise usage("--out", "only with --find-max-utilization")
    from gpumix.profiler.simulate.run import SimOptions, prepare, simulate as run_sim

    opts = SimOptions(duration_s=duration, arrivals=arrivals, gamma_shape=gamma_shape, rate_scale=rate_scale,
                      seed=seed, router=router, profiles=str(profiles) if profiles else None, processes=processes)
    progress, bar = _progress(quiet)
    try:
        setup = prepare(plan_file, workload, opts)
        if find_max:
            return _find(setup, opts, progress, bar, out_path)
        report, stats = run_sim(plan_file, workload, opts, progress, setup=setup)
        if bar is not None:
            bar.stop()
        if report_path is not None:
            write_json(report_path, report)
    except GpumixError as e:
        if bar is not None:
            bar.stop()
        raise fail_run(e) from None
    except OSError as e:
        if bar is not None:
            bar.stop()
        raise fail_run(cannot_write(report_path, "--report", e)) from None
    render(report, stats)
    report_verdict(report, report_path)


def _find(setup, opts, progress, bar, out_path: Optional[Path]) -> None:
    import yaml

    from gpumix.planner.errors import InputError
    from gpumix.planner.plan import write_atomic
    from gpumix.planner.workload import load_workload_doc, read_structured
    from gpumix.profiler.simulate.maxutil import find_all, overrides_doc

    found = find_all(setup, opts, progress)
    if bar is not None:
        bar.stop()
    render_found(found)
    if out_path is not None:
        raw = read_structured(setup.workload_path, "workload")
        doc = overrides_doc(raw, found, str(setup.workload_path), str(out_path))
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)
        from gpumix.planner.catalog import load_catalog

        load_workload_doc(yaml.safe_load(text), load_catalog(), need_shapes=False, path=out_path)  # it must read back
        try:
            write_atomic(out_path, text)
        except OSError as e:
            raise fail_run(InputError(str(out_path), "--out", f"cannot write: {e.strerror}")) from None
        err.print(f"workload with per-model max_utilization written to {clean(out_path)}", markup=False)
    if any(f.max_utilization is None for f in found):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(simulate)
