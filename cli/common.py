"""What every command shares: the two consoles, errors as one line and an exit code, the option
types several commands take, and parsing of option values (comma lists, choices, devices).

Exit codes: 0 ok; 1 a plan failed a check (or an internal error); 2 bad input (file and field
named); 3 infeasible demand (reason given); 4 no plan found within the time limit.

Torch-free: torch is imported only inside check_device, which commands call at run time.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from gpumix.planner.errors import InputError

err = Console(stderr=True, highlight=False)  # tables for people, progress, notes and errors
out = Console(highlight=False)  # reports for people on stdout; machine output bypasses rich

# Planning commands (plan, check, estimate, export, sweep) name the outcome; commands that run
# models or load (profile, validate, serve) say `failed` for anything but bad input.
_PLANNING_LABELS = {2: "error", 3: "infeasible", 4: "no plan"}
_RUNNING_LABELS = {2: "error"}


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")  # C0, DEL, C1 (ESC, CSI), line separators
ONE_LINE_MAX = 1000  # characters of a message on the terminal; the rest is cut


def clean(text: object) -> str:
    """User text (names, paths, messages) safe on a terminal: every control character (newline,
    ESC, ...) becomes `?`. Printed with markup=False or as rich Text, so `[bold]` stays literal."""
    return _CONTROL.sub("?", str(text))


def one_line(text: object) -> str:
    """`clean`, with newlines and tabs folded to spaces and at most ONE_LINE_MAX characters."""
    raw = str(text)
    s = clean(re.sub(r"\s*[\r\n\t]+\s*", " ", raw[:2 * ONE_LINE_MAX]).strip())  # cut first: messages can be huge
    return s if len(s) <= ONE_LINE_MAX and len(raw) <= 2 * ONE_LINE_MAX else s[:ONE_LINE_MAX] + "..."


def _exit(e: Exception, labels: dict[int, str], other: str) -> typer.Exit:
    code = getattr(e, "exit_code", 1)
    err.print(f"gpumix: {labels.get(code, other)}: {one_line(e)}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def fail(e: Exception) -> typer.Exit:
    """One line on stderr for a planning command's error; raise the result `from None`."""
    return _exit(e, _PLANNING_LABELS, "error")


def fail_run(e: Exception) -> typer.Exit:
    """One line on stderr for a profile, validate or serve error; raise the result `from None`."""
    return _exit(e, _RUNNING_LABELS, "failed")


def usage(field: str, message: str) -> typer.Exit:
    """A bad option value found before any file is read: one line, exit 2."""
    err.print(f"gpumix: error: {one_line(f'{field}: {message}')}", markup=False, soft_wrap=True)
    return typer.Exit(2)


def cannot_write(path: Optional[Path], option: str, e: OSError) -> InputError:
    return InputError(str(path), option, f"cannot write: {e.strerror}")


def write_json(path: Path, doc: dict) -> None:
    from gpumix.planner.plan import write_atomic

    write_atomic(path, json.dumps(doc, indent=2) + "\n")


def dim(msg: str) -> None:
    """Progress line on stderr (user text in it stays literal: no markup)."""
    err.print(one_line(msg), style="dim", markup=False)


def silent(msg: str) -> None:
    pass


# -- option values ---------------------------------------------------------------------------------

DTYPES = ("bf16", "fp16", "fp32")


def one_of(cmd: str, option: str, value: Optional[str], choices: tuple[str, ...]) -> None:
    """`value` is one of `choices` (None passes: the option was not given)."""
    if value is not None and value not in choices:
        names = f"{', '.join(choices[:-1])} or {choices[-1]}"
        raise InputError(cmd, option, f"must be {names}, got {value!r}")


def name_option(cmd: str, option: str, value: Optional[str]) -> None:
    """A model or GPU name given as an option (written into a table the planner reads back) has the
    planner's character set (planner/reading.py name_problem); None passes."""
    from gpumix.planner.reading import name_problem, quote

    if value is not None and (problem := name_problem(value)):
        raise InputError(cmd, option, f"{problem}, got {quote(value)}")


def positive_ints(text: Optional[str], cmd: str, option: str) -> Optional[tuple[int, ...]]:
    """`1,2,4` -> (1, 2, 4); None stays None."""
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise InputError(cmd, option, f"must be a comma-separated list of positive integers, got {text!r}")
    return values


def positive_floats(text: Optional[str], option: str) -> Optional[list[float]]:
    """`0.5,1,2` -> [0.5, 1.0, 2.0]; None stays None; anything else exits 2 (see usage)."""
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise usage(option, f"expected comma-separated numbers, got {text[:100]!r}") from None
    if not values or any(not 0 < v < math.inf for v in values):
        raise usage(option, f"expected positive finite numbers, got {text[:100]!r}")
    return values


def require_torch(cmd: str) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(cmd, "", "needs torch: pip install 'gpumix[runtime]'") from None


def check_device(cmd: str, device: str, dtype: Optional[str] = None) -> None:
    """--device is cpu, cuda or cuda:N (and --dtype, when given, a known type), torch imports,
    and cuda has a GPU. Checked in that order, so the first bad option is the one named."""
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(cmd, "--device", f"must be cpu or cuda, got {device!r}")
    one_of(cmd, "--dtype", dtype, DTYPES)
    require_torch(cmd)
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(cmd, "--device", "cuda requested but torch sees no GPU")


# -- option types ----------------------------------------------------------------------------------

# plan, check, estimate
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
EfficiencyOpt = Annotated[Optional[Path], typer.Option(
    "--efficiency", metavar="FILE", help="Your efficiency file (`gpumix profile calibrate --out`): its "
                                         "factors over the bundled ones, its specs add GPU types "
                                         "(docs/formats.md).")]

# validate, serve: how to run the in-process runtime
ScaleLayersOpt = Annotated[Optional[int], typer.Option("--scale-layers", min=1, help="As in `gpumix profile`.")]
ScaleHiddenOpt = Annotated[Optional[float], typer.Option("--scale-hidden", min=0.01, max=1.0,
                                                         help="As in `gpumix profile`.")]
ScaleVocabOpt = Annotated[Optional[int], typer.Option("--scale-vocab", min=16, help="As in `gpumix profile`.")]
RunDtypeOpt = Annotated[Optional[str], typer.Option(
    "--dtype", help="bf16, fp16 or fp32 (default: the profile's, else bf16).")]


def report_verdict(report: dict, report_path) -> None:
    """The end of `validate` and `simulate`: the report's notes and failures on stderr, one line
    each, where the report went, and exit 1 when it did not pass."""
    for note in report["notes"]:
        err.print(clean(f"note: {note}"), markup=False, soft_wrap=True)
    for f in report["failures"]:
        err.print(clean(f"gpumix: failed: {f}"), markup=False, soft_wrap=True)
    if report_path is not None:
        err.print(f"report written to {clean(report_path)}", markup=False)
    if not report["passed"]:
        raise typer.Exit(1)
