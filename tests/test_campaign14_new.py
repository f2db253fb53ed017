"""Regressions from the issue-14 campaign over schedules and `gpumix simulate` (inputs the first
campaign never saw): a simulated run is bounded before it starts, and `plan --plot` failing leaves
--out untouched."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app

SIM_WL = """models:
  - name: llama-3.2-1b
    rate_rps: 1.0
    slo: {ttft_ms: 2000, tpot_ms: 100}
    buckets: [{input_tokens: 128, output_tokens: 32, share: 1.0}]
gpus: [{name: L4, price_per_hour: 0.8, available: 4}]
max_utilization: 0.9
"""
PERIODS_WL = """models:
  - name: llama-3.2-1b
    rate_rps: [1.0, 2.0, 4.0, 2.0]
    slo: {ttft_ms: 2000, tpot_ms: 100}
    buckets: [{input_tokens: 256, output_tokens: 128, share: 1.0}]
gpus: [{name: L4, price_per_hour: 0.8, available: 8}]
max_utilization: 0.9
"""


def invoke(*args):
    r = CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


@pytest.fixture(scope="module")
def sim_plan(tmp_path_factory):
    d = tmp_path_factory.mktemp("sim")
    (d / "wl.yaml").write_text(SIM_WL)
    r = invoke("plan", d / "wl.yaml", "--out", d / "plan.json", "--time-limit", "10", "--no-baseline", "-q")
    assert r.exit_code == 0, r.stderr
    return d


@pytest.mark.parametrize("args,field", [(["--duration", "1e9"], "--duration"),
                                        (["--duration", "5", "--rate-scale", "1e6"], "--duration")])
def test_simulate_refuses_a_run_of_hours_before_it_starts(sim_plan, args, field):
    r = invoke("simulate", sim_plan / "plan.json", sim_plan / "wl.yaml", "-q", "--processes", "1",
               *args, "--report", sim_plan / "rep.json")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpumix: ") and field in lines[0]
    assert not (sim_plan / "rep.json").exists()


def test_plan_plot_that_cannot_be_written_leaves_out_untouched(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "wl.yaml").write_text(PERIODS_WL)
    r = invoke("plan", tmp_path / "wl.yaml", "--out", tmp_path / "plan.json", "--time-limit", "10",
               "--no-baseline", "-q", "--plot", tmp_path / "wl.yaml" / "p.png")
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--plot" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wl.yaml"]
