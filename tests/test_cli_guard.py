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


# ---- 3. reports a reader does not trip on

ONE_MODEL = """models:
  - name: llama-3.1-8b
    rate_rps: {rate}
    slo: {{ttft_ms: 1000, tpot_ms: 60}}
    buckets: [{{input_tokens: 256, output_tokens: 128, share: 1.0}}]
"""


def _wl(tmp_path, rate, tail, name="w.yaml"):
    p = tmp_path / name
    p.write_text(ONE_MODEL.format(rate=rate) + tail)
    return p


def _section(text: str, title: str) -> list[str]:
    """The lines of the table titled `title`, up to the next blank line."""
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith(title))
    return lines[i:lines.index("", i)]


def test_a_partial_plan_heading_shows_what_is_served(tmp_path):
    w = _wl(tmp_path, 40, "gpus:\n  - {name: L4, price_per_hour: 0.8, available: 4}\n")
    r = run("plan", w, "-q", "--allow-partial", "--format", "json")
    assert r.exit_code == 0, r.output
    frac = json.loads(r.stdout)["models"][0]["served_fraction"]
    assert 0 < frac < 1
    r = run("plan", w, "-q", "--allow-partial")
    assert f"llama-3.1-8b: {40 * frac:,.2f} of 40.00 req/s served ({frac:.1%})" in r.stdout


def test_identical_nodes_are_one_row_with_a_count(tmp_path):
    w = _wl(tmp_path, 160, "instances: [g6e.xlarge]\n")
    r = run("plan", w, "-q", "--format", "json")
    assert r.exit_code == 0, r.output
    n = len(json.loads(r.stdout)["nodes"])
    assert n >= 10
    nodes = _section(run("plan", w, "-q").stdout, "Nodes")
    assert nodes[0].startswith(f"Nodes ({n})")
    rows = [ln for ln in nodes if "g6e.xlarge" in ln]
    assert len(rows) == 1 and rows[0].split()[0] == str(n)


def test_the_gpus_table_of_an_instance_plan_adds_up_to_its_cost(tmp_path):
    """One 4-GPU node bought for a TP2 replica: the cost is the node's price, $2.00/h, while the
    cheapest $/GPU-hour prices the two GPUs used at $1.00/h. The table shows the node cost."""
    w = _wl(tmp_path, 2, "instances:\n  - {name: x4, gpu: L4, gpus: 4, price_per_hour: 2.0, region: r1}\n"
                         "  - {name: x1, gpu: L4, gpus: 1, price_per_hour: 0.9, region: r1}\n")
    r = run("plan", w, "-q", "--format", "json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["cost_per_hour"] == pytest.approx(2.0) and [nd["instance"] for nd in plan["nodes"]] == ["x4"]
    assert sum(g["cost_per_hour"] for g in plan["gpus"]) == pytest.approx(1.0)  # why the old table misled
    text = run("plan", w, "-q").stdout
    gpus = _section(text, "GPUs")
    total = next(ln for ln in gpus if ln.startswith("total"))
    assert total.split()[-1] == "$2.00" and "4" in total.split()
    assert "the cost is the node prices ($2.00/h)" in text and "($1.00/h)" in text


def _render(fn, *args, width=120) -> str:
    from rich.console import Console

    c = Console(width=width, record=True, file=open(os.devnull, "w"))
    fn(c, *args)
    return c.export_text()


def test_a_current_plan_states_the_churn_objective_status():
    """The plan's status and gap are the cost's against a bound that ignores churn; what --current
    minimizes, and proves, is cost + churn: the last line says that one's status."""
    from gpumix.cli import render

    plan = {"status": "feasible", "gap": 0.023, "cost_per_hour": 100.0, "lower_bound_per_hour": 97.7,
            "solver": {"mip_gap": 1e-4},
            "churn": {"objective_per_hour": 103.0, "objective_lower_bound": 103.0}}
    text = _render(render._status, plan)
    assert "cost + churn $103.00/h (the objective), optimal: lower bound $103.00/h, gap 0.000%" in text
    assert "feasible" not in text.splitlines()[0]
    assert "without churn no plan costs less than $97.70/h" in text
    plan["churn"]["objective_lower_bound"] = 90.0
    assert "(the objective), feasible: lower bound $90.00/h, gap 12.621%" in _render(render._status, plan)
    del plan["churn"]
    assert "cost $100.00/h, feasible: lower bound $97.70/h, gap 2.300%" in _render(render._status, plan)


def test_a_current_plan_end_to_end(tmp_path):
    w = _wl(tmp_path, 6, "instances: [g6e.xlarge, g5.xlarge]\n")
    assert run("plan", w, "-o", tmp_path / "p.json", "-q").exit_code == 0
    w2 = _wl(tmp_path, 9, "instances: [g6e.xlarge, g5.xlarge]\n", "w2.yaml")
    r = run("plan", w2, "--current", tmp_path / "p.json", "-q")
    assert r.exit_code == 0, r.output
    assert "(the objective), optimal" in r.stdout and "node None" not in r.stdout


def _validate_report(model="llama-3.1-70b-instruct"):
    g = lambda m, gpu, tp, st: {  # noqa: E731
        "model": m, "gpu": gpu, "tp": tp, "count": 3, "replicas_run": 2, "planned_rps": 12.345,
        "achieved_rps": 12.1, "ttft_ms": {"p50": 123.4, "p99": 1834.2}, "tpot_ms": {"p50": 45.2, "p99": 78.9},
        "slo_attainment": 0.987, "status": st, "reasons": ["no GPU"]}
    return {"plan": "plans/production.json", "mode": "runtime", "load": {"arrivals": "poisson", "duration_s": 60},
            "groups": [g(model, "A100-80GB", 4, "passed"), g("qwen2.5-14b", "H100-PCIe", 1, "failed"),
                       g("phi-3-mini", "L4", 1, "skipped")], "passed": False, "validated": 2, "skipped": 1}


def test_the_validate_table_reads_at_80_columns():
    from gpumix.cli import render

    text = _render(render.validate_report, _validate_report(), width=80)
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    for word in ("llama-3.1-70b-instruct", "A100-80GB TP4 x2/3", "123/1834", "45/79", "98.7%", "passed",
                 "FAILED", "skipped", "in SLO", "TTFT", "TPOT", "req/s"):
        assert sum(word in ln for ln in lines) >= 1, word  # whole, on one line
    assert "FAILED: 2 group(s) validated, 1 skipped" in text
    text = _render(render.validate_report, _validate_report("[/]" + "m" * 60), width=80)
    assert max(len(ln) for ln in text.splitlines()) <= 80 and "[/]" in text


# ---- 4. check without a workload checks the plan's own

def test_check_uses_the_plans_workload_relative_to_the_plan(tmp_path, monkeypatch):
    sub = tmp_path / "sub"
    sub.mkdir()
    _wl(sub, 20, "gpus:\n  - {name: L4, price_per_hour: 0.8}\n")
    monkeypatch.chdir(sub)
    assert run("plan", "w.yaml", "-o", "p.json", "-q").exit_code == 0
    assert json.loads((sub / "p.json").read_text())["inputs"]["workload"] == "w.yaml"
    monkeypatch.chdir(tmp_path)  # inputs.workload is now found next to the plan, not in the cwd
    r = run("check", "sub/p.json")
    assert r.exit_code == 0, r.output
    assert "ok" in r.stdout and "note" not in r.stderr
    # the bundled example would reject this plan: it serves none of the example's models
    assert run("check", "sub/p.json", DATA_DIR / "examples" / "workload.yaml").exit_code == 1


def test_check_falls_back_to_the_bundled_example_with_a_note(tmp_path):
    p = tmp_path / "p.json"
    assert run("plan", "-o", p, "-q").exit_code == 0  # planned from the bundled example: no note
    r = run("check", p)
    assert r.exit_code == 0 and "note" not in r.stderr
    doc = json.loads(p.read_text())
    doc["inputs"]["workload"] = "gone.yaml"
    p.write_text(json.dumps(doc))
    r = run("check", p)
    assert r.exit_code == 0, r.output
    assert "inputs.workload 'gone.yaml' is not a readable file; checking against the bundled example" in r.stderr


def test_progress_bars_and_sweep_rows_print_names_literally():
    from types import SimpleNamespace

    from gpumix.cli import profile, render
    from gpumix.cli.common import err

    with err.capture() as cap:
        profile._with_progress(lambda progress: progress("[/] [bold]m\x1b", 1)("step"), quiet=False)
    assert "[/] [bold]m?" in cap.get()
    point = SimpleNamespace(scale=1.0, tpot_ms=None)
    bad = SimpleNamespace(point=point, cost=None, status="error", error="[/]models[0]: bad")
    ok = SimpleNamespace(point=point, cost=2.0, status="optimal", gpus=[("[red]G", 2)], best_single=("[/]", 3.0))
    text = _render(render.sweep_table, [bad, ok])
    assert "[/]models[0]: bad" in text and "2x[red]G" in text and "[/] $3.00" in text


def test_check_reads_the_plans_throughput_table_too(tmp_path):
    from gpumix.data import DATA_DIR
    ex = DATA_DIR / "examples"
    plan = tmp_path / "plan.json"
    r = runner.invoke(app, ["plan", str(ex / "split.yaml"), "--profiles", str(ex / "split-profiles.json"),
                            "--out", str(plan), "-q"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["check", str(plan)])
    assert r.exit_code == 0, r.output  # checked against the measured capacities it was planned from
