"""`gpumix` command line: the root typer app. Each command group lives in its own module and
calls planner/, profiler/ or solvers/; cli/common.py holds what they share (consoles, errors
and exit codes, option types).

  plan.py      plan, check, estimate, catalog
  export.py    export, sweep (plot.py draws the sweep)
  validate.py  validate
  serve.py     serve
  profile.py   the `profile` sub-app: run, calibrate, import-vllm, endpoint

Exit codes: 0 ok; 1 a plan failed a check (or an internal error); 2 bad input (file and field
named); 3 infeasible demand (reason given); 4 no plan found within the time limit.
Importing this module imports neither torch nor matplotlib: commands import them when they run.
"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from gpumix import __version__ as VERSION  # one source: the package metadata
from gpumix.cli import export, plan, profile, serve, validate

app = typer.Typer(
    name="gpumix",
    help="Plan cost-optimal heterogeneous GPU fleets for serving several LLMs under latency SLOs.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


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


# Registration order is the order of `gpumix --help`.
plan.register(app)
validate.register(app)
serve.register(app)
export.register(app)
app.add_typer(profile.app, name="profile")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
