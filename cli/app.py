"""`gpumix` command line: the root typer app. Each command group lives in its own module and
calls planner/, profiler/ or solvers/; cli/common.py holds what they share (consoles, errors
and exit codes, option types).

  plan.py      plan, check, estimate, catalog
  export.py    export, sweep (plot.py draws the sweep)
  validate.py  validate
  simulate.py  simulate
  serve.py     serve
  profile.py   the `profile` sub-app: run, calibrate, import-vllm, endpoint

Exit codes: 0 ok; 1 a plan failed a check (or an internal error); 2 bad input (file and field
named) or bad usage; 3 infeasible demand (reason given); 4 no plan found within the time limit.
Every error is one line on stderr (GuardedGroup below is the last guard).
Importing this module imports neither torch nor matplotlib: commands import them when they run.
"""
from __future__ import annotations

import os
import sys
import traceback
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

try:  # typer >= 0.2x vendors click as typer._click; before, typer runs on click itself
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover (older typer)
    from click import exceptions as _click_errors
_NoArgsIsHelp = getattr(_click_errors, "NoArgsIsHelpError", ())  # click < 8.2 prints the help itself

from gpumix import __version__ as VERSION  # one source: the package metadata
from gpumix.cli import export, plan, profile, serve, simulate, validate
from gpumix.cli.common import err, one_line


class _Debug:
    on = False  # set by --debug for this invocation; GPUMIX_DEBUG=1 sets it for every one


def _debugging() -> bool:
    return _Debug.on or os.environ.get("GPUMIX_DEBUG", "") not in ("", "0")


def _text(e: BaseException) -> str:
    try:
        return str(e)
    except Exception:  # noqa: BLE001 (a broken __str__ must not escape the guard)
        return "(no message)"


def _command(ctx) -> str:
    """'profile run: ' for an error in `gpumix profile run`; '' at the root."""
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names)) + ": " if names else ""


class GuardedGroup(TyperGroup):
    """The last guard around every command: a usage error is one line and exit 2 (not a rich box),
    and an exception nothing else caught is one line and exit 1, its traceback only with --debug or
    GPUMIX_DEBUG=1. Commands still report their own errors (cli/common.py `fail`): this is the
    safety net, not the way errors are meant to leave."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        _Debug.on = False
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NoArgsIsHelp as e:  # `gpumix`, `gpumix profile`: the help
            typer.echo(e.ctx.get_help() if e.ctx is not None else e.format_message(), err=True)
            sys.exit(e.exit_code)
        except _click_errors.ClickException as e:  # UsageError, BadParameter, FileError: exit 2 (or theirs)
            where = _command(getattr(e, "ctx", None))
            err.print(f"gpumix: error: {one_line(where + e.format_message())}", markup=False, soft_wrap=True)
            sys.exit(e.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            err.print("gpumix: interrupted", markup=False)
            sys.exit(1)
        except Exception as e:  # noqa: BLE001 (the last guard)
            if _debugging():
                traceback.print_exc()
            err.print(f"gpumix: internal error: {one_line(f'{type(e).__name__}: {_text(e)}')}"
                      + ("" if _debugging() else " (run with --debug or GPUMIX_DEBUG=1 for the traceback)"),
                      markup=False, soft_wrap=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)  # an Exit's code comes back as rv


app = typer.Typer(
    name="gpumix",
    cls=GuardedGroup,
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
    debug: Annotated[bool, typer.Option("--debug", help="On an internal error, print the traceback "
                                                        "(also GPUMIX_DEBUG=1).")] = False,
):
    """Plan which GPU types to rent, how many and at what TP degree, so every model meets its
    request rate and TTFT/TPOT SLO at the lowest $/hour, with a proven lower bound."""
    _Debug.on = debug


# Registration order is the order of `gpumix --help`.
plan.register(app)
validate.register(app)
simulate.register(app)
serve.register(app)
export.register(app)
app.add_typer(profile.app, name="profile")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
