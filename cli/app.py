"""`gpumix` command line: thin typer commands over planner/, profiler/ and solvers/.

Exit codes: 0 ok; 1 a plan failed a check (or an internal error); 2 bad input (file and field
named); 3 infeasible demand (reason given); 4 no plan found within the time limit.
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from gpumix.cli import render

app = typer.Typer(
    name="gpumix",
    help="Plan cost-optimal heterogeneous GPU fleets for serving several LLMs under latency SLOs.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

from gpumix import __version__ as VERSION  # noqa: E402  (one source: the package metadata)


class Format(str, Enum):
    table = "table"
    json = "json"


def _fail(e: Exception) -> typer.Exit:
    code = getattr(e, "exit_code", 1)
    label = {2: "error", 3: "infeasible", 4: "no plan"}.get(code, "error")
    err.print(f"gpumix: {label}: {e}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def _version(value: bool):
    if value:
        print(f"gpumix {VERSION}")
        raise typer.Exit(0)


@app.callback()
def main_callback(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
):
    """Plan which GPU types to rent, how many and at what TP degree, so every model meets its
    request rate and TTFT/TPOT SLO at the lowest $/hour, with a proven lower bound."""


WorkloadArg = Annotated[Optional[Path], typer.Argument(
    help="Workload file (JSON or YAML): models with rate_rps, slo and buckets; optional gpus with "
         "price_per_hour and available. Default: the bundled example.", show_default=False,
    metavar="WORKLOAD")]
ProfilesOpt = Annotated[Optional[Path], typer.Option(
    "--profiles", metavar="FILE", help="Throughput table JSON ({entries: [{model, gpu, tp, input_tokens, output_tokens, "
                       "max_rps}]}). Only the configurations it lists are used.")]
FillOpt = Annotated[bool, typer.Option(
    "--fill-estimates", help="With --profiles: fill missing configurations with roofline estimates.")]
CatalogOpt = Annotated[Optional[Path], typer.Option(
    "--catalog", metavar="FILE", help="SkyPilot catalog CSV (vms.csv): its GPU instances and prices replace "
                                      "the bundled instances (docs/ecosystem.md).")]


@app.command()
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
):
    """Size and route a fleet: replicas per (model, GPU type, TP), routing per request bucket."""
    from gpumix.planner.errors import GpumixError
    from gpumix.planner.plan import dumps, write_atomic
    from gpumix.solvers.pipeline import PlanOptions, plan_workload

    progress = None if quiet else (lambda msg: err.print(f"[dim]{msg}[/dim]"))
    try:
        result = plan_workload(workload, profiles, PlanOptions(
            time_limit=time_limit, mip_gap=mip_gap, fill_estimates=fill_estimates,
            whole_buckets=whole_buckets, baseline=not no_baseline, progress=progress,
            current=current, churn_cost=churn_cost, spare_nodes=spare_nodes, allow_partial=allow_partial,
            spot_share=spot_share, catalog=catalog_csv, share_gpus=share_gpus))
        text = dumps(result.plan)
        if out_path is not None:
            write_atomic(out_path, text)
    except GpumixError as e:
        raise _fail(e) from None
    except OSError as e:
        from gpumix.planner.errors import InputError
        raise _fail(InputError(str(out_path), "--out", f"cannot write: {e.strerror}")) from None
    if not quiet:
        for note in result.notes:
            err.print(f"note: {note}", markup=False)
    if fmt is Format.json:
        sys.stdout.write(text)
    else:
        render.plan_report(out, result)
        if out_path is not None:
            out.print(f"plan written to {out_path}")


@app.command()
def check(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON to check.", metavar="PLAN")],
    workload: WorkloadArg = None,
    profiles: ProfilesOpt = None,
    fill_estimates: FillOpt = False,
    catalog_csv: CatalogOpt = None,
):
    """Check a plan against a workload with the independent plan checker (exit 1 on a violation)."""
    from gpumix.planner.checker import check_plan
    from gpumix.planner.errors import GpumixError
    from gpumix.planner.workload import read_structured
    from gpumix.solvers.pipeline import load_problem

    try:
        doc = read_structured(plan_file)
        wl, problem, _ = load_problem(workload, profiles, fill_estimates, catalog_csv)
    except GpumixError as e:
        raise _fail(e) from None
    sharing = None
    if isinstance(doc, dict) and doc.get("shared"):  # memory of shared groups needs the model shapes
        from gpumix.planner.catalog import load_catalog
        from gpumix.planner.sharing import build_sharing
        from gpumix.planner.profiles import decode_step_fits
        sharing = build_sharing(wl, load_catalog(), problem, decode_step_fits(profiles) if profiles else None)
    violations = check_plan(doc, problem, wl.instances, sharing)
    for v in violations:
        err.print(f"{plan_file}: {v}", markup=False, soft_wrap=True)
    if violations:
        raise typer.Exit(1)
    out.print(f"{plan_file}: ok (cost ${doc['cost_per_hour']:,.2f}/h)")


@app.command()
def estimate(
    workload: WorkloadArg = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the throughput table here.")] = None,
):
    """Write the roofline estimates for a workload as a throughput table (the --profiles format)."""
    from gpumix.planner.errors import GpumixError
    from gpumix.planner.plan import write_atomic
    from gpumix.solvers.pipeline import load_problem

    try:
        _, problem, _ = load_problem(workload, None)
        entries = [{"model": c.model, "gpu": c.gpu, "tp": c.tp, "input_tokens": k[0], "output_tokens": k[1],
                    "max_rps": mu, "source": problem.source[(c, k)]}
                   for c in problem.configs for k, mu in problem.capacity[c].items()]
        text = json.dumps({"entries": entries, "generator": f"gpumix {VERSION} roofline"}, indent=2) + "\n"
        if out_path is None:
            sys.stdout.write(text)
        else:
            write_atomic(out_path, text)
            err.print(f"{len(entries)} entries written to {out_path}")
    except GpumixError as e:
        raise _fail(e) from None


@app.command()
def catalog(
    what: Annotated[str, typer.Argument(help="gpus or models")] = "gpus",
):
    """List the bundled GPU catalog (specs, $/GPU-hour) or model catalog (shapes, parameters)."""
    from gpumix.planner.catalog import load_catalog

    if what not in ("gpus", "models"):
        err.print(f"gpumix: error: catalog: expected 'gpus' or 'models', got {what!r}")
        raise typer.Exit(2)
    render.catalog(out, load_catalog(), what)


from gpumix.cli.profile_cmd import profile_app  # noqa: E402  (torch-free; imports torch inside its commands)

app.add_typer(profile_app, name="profile")

from gpumix.cli.validate_cmd import register as register_validate  # noqa: E402  (torch-free, as above)

register_validate(app)

from gpumix.cli.export_cmd import register as register_export  # noqa: E402  (matplotlib only inside --plot)

register_export(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
