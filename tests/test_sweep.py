"""gpumix sweep (demand and SLO points, infeasible points in the table, plots as PNG/SVG) and the
CLI basics: plan --format json, --version, -h on every command, shell completion, lazy imports."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.solvers.pipeline import PlanOptions
from gpumix.solvers.sweep import SweepPoint, run_sweep, sweep_points
from helpers import LLAMA_8B_WORKLOAD, SKYPILOT_CSV

runner = CliRunner()
CSV = SKYPILOT_CSV
WL = LLAMA_8B_WORKLOAD + """  - name: phi-3-mini
    rate_rps: 10
    slo: {ttft_ms: 500, tpot_ms: 40}
    buckets: [{input_tokens: 512, output_tokens: 16, share: 1.0}]
gpus:
  - {name: H100, price_per_hour: 12.29}
  - {name: L40S, price_per_hour: 1.861, available: 4}
  - {name: L4, price_per_hour: 0.8048}
"""


@pytest.fixture
def wl(tmp_path):
    p = tmp_path / "w.yaml"
    p.write_text(WL)
    return p


def test_points_grid():
    assert sweep_points([1, 2], None) == [SweepPoint(1, None), SweepPoint(2, None)]
    assert len(sweep_points([1, 2], [40, 60, 120])) == 6
    assert sweep_points(None, [40]) == [SweepPoint(1.0, 40)]


def test_three_point_sweep_with_png(wl, tmp_path):
    png = tmp_path / "sweep.png"
    r = runner.invoke(app, ["sweep", str(wl), "--scale", "0.5,1,2", "--plot", str(png), "--format", "json"])
    assert r.exit_code == 0, r.output
    pts = json.loads(r.stdout)["points"]
    assert [p["scale"] for p in pts] == [0.5, 1, 2] and all(p["status"] == "optimal" for p in pts)
    costs = [p["cost_per_hour"] for p in pts]
    assert costs == sorted(costs)  # more demand never costs less
    for p in pts:
        assert sum(p["gpus"].values()) > 0
        assert p["best_single_gpu"]["cost_per_hour"] >= p["cost_per_hour"] - 1e-9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_slo_sweep_svg_and_infeasible_point_is_a_row(wl, tmp_path):
    svg = tmp_path / "slo.svg"
    r = runner.invoke(app, ["sweep", str(wl), "--tpot-ms", "1,60,120", "--plot", str(svg), "-q"])
    assert r.exit_code == 0, r.output
    assert "infeasible" in r.stdout and "optimal" in r.stdout
    assert ET.parse(svg).getroot().tag.endswith("svg")
    res = run_sweep(wl, None, PlanOptions(time_limit=30), sweep_points(None, [1, 120]))
    assert res[0].status == "infeasible" and res[0].cost is None and res[0].error
    assert res[1].cost > 0


def test_sweep_over_a_skypilot_catalog(wl, tmp_path):
    r = runner.invoke(app, ["sweep", str(wl), "--scale", "1,2", "--catalog", str(CSV), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    for p in json.loads(r.stdout)["points"]:
        assert p["status"] == "optimal"
        if p["best_single_gpu"] is not None:  # an instance plan on one type's instances
            assert p["best_single_gpu"]["cost_per_hour"] >= p["cost_per_hour"] - 1e-9


def test_sweep_usage_errors(wl, tmp_path, monkeypatch):
    for args, field in ((["--scale", "1,x"], "--scale"), (["--scale", "0"], "--scale"), ([], "--scale"),
                        (["--scale", "1", "--plot", str(tmp_path / "a.pdf")], "--plot")):
        r = runner.invoke(app, ["sweep", str(wl), *args])
        assert r.exit_code == 2 and field in r.output, (args, r.output)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plot extra were not installed
    r = runner.invoke(app, ["sweep", str(wl), "--scale", "1", "--plot", str(tmp_path / "a.png")])
    assert r.exit_code == 2 and "pip install 'gpumix[plot]'" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_planning_imports_neither_torch_nor_matplotlib():
    code = ("import sys, gpumix.cli.app, gpumix.solvers.pipeline, gpumix.solvers.sweep, gpumix.planner.export, gpumix.planner.skypilot; "
            "bad = [m for m in ('torch', 'matplotlib') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


_GROUP = typer.main.get_command(app)
_COMMANDS = [[n] for n in _GROUP.commands] + [[n, s] for n, c in _GROUP.commands.items()
                                              for s in getattr(c, "commands", {})]


@pytest.mark.parametrize("args", _COMMANDS, ids=" ".join)
def test_help_everywhere(args):
    r = runner.invoke(app, [*args, "-h"])
    assert r.exit_code == 0 and "Usage" in r.output


def test_cli_basics_version_completion_json():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0 and r.stdout.startswith("gpumix ")
    assert {"plan", "export", "sweep", "check"} <= set(_GROUP.commands)
    assert "--install-completion" in runner.invoke(app, ["-h"]).output
    r = runner.invoke(app, ["--show-completion", "bash"])
    assert r.exit_code == 0 and "complete" in r.output and "_GPUMIX_COMPLETE" in r.output
    r = runner.invoke(app, ["plan", "--format", "json", "-q", "--time-limit", "30"])
    assert r.exit_code == 0 and json.loads(r.stdout)["schema_version"] == 1
