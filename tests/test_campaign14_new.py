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
                                        (["--duration", "5", "--rate-scale", "1e6"], "--duration"),
                                        (["--duration", "2", "--arrivals", "gamma", "--gamma-shape", "1e-9"],
                                         "--gamma-shape")])
def test_simulate_refuses_unbounded_or_degenerate_runs_before_they_start(sim_plan, args, field):
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


@pytest.mark.parametrize("tamper,field", [(("horizon", "period_hours", 2), "horizon.period_hours"),
                                          (("horizon", "timezone", "Europe/Berlin"), "horizon.timezone"),
                                          (("horizon", "cyclic", False), "horizon.cyclic"),
                                          ((0, "gpus", {"L4": 99}), "periods[0].gpus")])
def test_check_refuses_a_periods_plan_whose_horizon_or_gpus_were_edited(tmp_path, tamper, field):
    import json

    (tmp_path / "wl.yaml").write_text(PERIODS_WL)
    r = invoke("plan", tmp_path / "wl.yaml", "--out", tmp_path / "plan.json", "--time-limit", "10",
               "--no-baseline", "-q")
    assert r.exit_code == 0, r.stderr
    assert invoke("check", tmp_path / "plan.json", tmp_path / "wl.yaml").exit_code == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    where, key, value = tamper
    (plan["horizon"] if where == "horizon" else plan["periods"][where])[key] = value
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    r = invoke("check", tmp_path / "plan.json", tmp_path / "wl.yaml")
    assert r.exit_code == 1 and field in r.stdout + r.stderr


def test_export_refuses_a_period_whose_hours_disagree_with_the_horizon(tmp_path):
    import json

    (tmp_path / "wl.yaml").write_text(PERIODS_WL.replace("max_utilization: 0.9", "max_utilization: 0.9\nperiod_hours: 6"))
    r = invoke("plan", tmp_path / "wl.yaml", "--out", tmp_path / "plan.json", "--time-limit", "10",
               "--no-baseline", "-q")
    assert r.exit_code == 0, r.stderr
    plan = json.loads((tmp_path / "plan.json").read_text())
    plan["periods"][1]["hours"] = 3
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    r = invoke("export", tmp_path / "plan.json", "--out", tmp_path / "exp")
    assert r.exit_code == 2 and "periods[1].hours" in r.stderr
    assert not (tmp_path / "exp").exists()
