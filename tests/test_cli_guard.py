"""The CLI's boundary (issue 14): the last guard, one-line usage errors, user text never read as
rich markup nor as terminal control, and the report fixes a new user tripped on."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR

runner = CliRunner()
CONFIG = DATA_DIR / "models" / "llama-3.1-8b.json"


def run(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def one_line_error(r, code: int, label: str = "error") -> str:
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith(f"gpumix: {label}: "), lines[0]
    assert "Traceback" not in r.output and "╭" not in r.output
    return lines[0]


# ---- 1. the last guard

def _boom(*a, **k):
    raise ZeroDivisionError("boom\nsecond line")


def test_an_unexpected_exception_is_one_line_and_exit_1(monkeypatch):
    import gpumix.solvers.pipeline as pipeline

    monkeypatch.setattr(pipeline, "plan_workload", _boom)
    r = run("plan", "-q")
    line = one_line_error(r, 1, "internal error")
    assert "ZeroDivisionError: boom second line" in line and "--debug" in line


def test_debug_option_and_env_show_the_traceback(monkeypatch):
    import gpumix.solvers.pipeline as pipeline

    monkeypatch.setattr(pipeline, "plan_workload", _boom)
    r = run("--debug", "plan", "-q")
    assert r.exit_code == 1 and "Traceback" in r.stderr and "gpumix: internal error:" in r.stderr
    r = run("plan", "-q", env={"GPUMIX_DEBUG": "1"})
    assert r.exit_code == 1 and "Traceback" in r.stderr
    r = run("plan", "-q")  # --debug does not stick to the next invocation
    assert r.exit_code == 1 and "Traceback" not in r.stderr


def test_the_guard_holds_in_a_real_process():
    """The console script's main(): a crash ends in one line on stderr, exit 1, no traceback."""
    env = {**os.environ, "GPUMIX_DEBUG": ""}
    code = ("import gpumix.solvers.pipeline as p\n"
            "def boom(*a, **k): raise RuntimeError('kaput')\n"
            "p.plan_workload = boom\n"
            "from gpumix.cli.app import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code, "plan", "-q"], capture_output=True, text=True, env=env)
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()]
    assert r.stderr.startswith("gpumix: internal error: RuntimeError: kaput")


@pytest.mark.parametrize("args, needle", [
    (["plan", "--time-limit", "0"], "plan: Invalid value for '--time-limit'"),
    (["plan", "--bogus"], "plan: No such option: --bogus"),
    (["plan", "--format", "xml"], "plan: Invalid value for '--format'"),
    (["nope"], "No such command 'nope'"),
    (["profile", "run", "--bogus"], "profile run: No such option"),
    (["check"], "check: Missing argument 'PLAN'"),
])
def test_usage_errors_are_one_line_exit_2(args, needle):
    line = one_line_error(run(*args), 2)
    assert needle in line


def test_help_and_no_arguments_still_show_help():
    r = run("--help")
    assert r.exit_code == 0 and "Usage" in r.output
    r = run()
    assert "Usage" in r.output and "gpumix: error" not in r.output
    r = run("profile")
    assert "Usage" in r.output and "gpumix: error" not in r.output


def test_documented_exit_codes_pass_through(tmp_path):
    r = run("check", tmp_path / "missing.json")
    one_line_error(r, 2)
    assert run("--version").exit_code == 0


# ---- 2. user text is text

def _workload(tmp_path, names, extra=""):
    models = "".join(
        f"  - name: {json.dumps(n)}\n    config: {json.dumps(str(CONFIG))}\n    rate_rps: 6\n"
        f"    slo: {{ttft_ms: 1000, tpot_ms: 60}}\n"
        f"    buckets: [{{input_tokens: 256, output_tokens: 128, share: 1}}]\n" for n in names)
    p = tmp_path / "w.yaml"
    p.write_text("models:\n" + models + "gpus:\n  - {name: L4, price_per_hour: 0.8}\n" + extra)
    return p


def test_markup_in_model_names_prints_literally(tmp_path):
    w = _workload(tmp_path, ["[/]", "[bold]x", "[red]y[/red]"])
    out = tmp_path / "p.json"
    r = run("plan", w, "-o", out, "-q")
    assert r.exit_code == 0, r.output
    assert "[/]: 6.00 req/s" in r.stdout and "[bold]x: 6.00 req/s" in r.stdout
    assert "[red]y[/red]" in r.stdout
    assert "\x1b" not in r.stdout
    assert json.loads(out.read_text())["status"] == "optimal"


def test_control_characters_in_names_never_reach_the_terminal(tmp_path):
    w = _workload(tmp_path, ["evil\nname\x1b[31m"])
    r = run("plan", w, "-q")
    if r.exit_code == 2:  # the input layer refuses such names: fine, as long as it says so in one line
        line = one_line_error(r, 2)
        assert "\x1b" not in line
        return
    assert r.exit_code == 0, r.output
    assert "\x1b" not in r.stdout and "evil?name?[31m" in r.stdout


def test_progress_and_error_lines_do_not_parse_markup():
    from gpumix.cli.common import clean, dim, err, fail, one_line
    from gpumix.planner.errors import InputError

    with err.capture() as cap:
        dim("[/] done [bold]x")
        fail(InputError("[/]a.yaml", "models[0]", "bad\nvalue\x1b[2J"))
    text = cap.get()
    assert "[/] done [bold]x" in text
    assert "gpumix: error: [/]a.yaml: models[0]: bad value?[2J" in text
    assert clean("a\x1bb\x9bc") == "a?b?c" and one_line("x" * 5000).endswith("...")


def test_sweep_help_shows_the_plot_extra():
    r = run("sweep", "-h")
    assert r.exit_code == 0
    assert "gpumix[plot]" in r.output.replace("\n", " ").replace("│", " ").replace(" ", "")
