import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR
from gpumix.planner.checker import check_plan
from gpumix.solvers.pipeline import load_problem

runner = CliRunner()
EX = DATA_DIR / "examples"


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_plan_bundled_example_json(tmp_path):
    r = run("plan", "--format", "json", "-q")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["schema_version"] == 1 and plan["status"] == "optimal"
    assert plan["lower_bound_per_hour"] <= plan["cost_per_hour"] + 1e-9
    assert len({g["gpu"] for g in plan["replicas"]}) >= 2  # heterogeneous
    base = plan["baseline"]["best_single_gpu"]
    assert base["cost_per_hour"] >= plan["cost_per_hour"] - 1e-9
    _, problem, _ = load_problem(None, None)
    assert check_plan(plan, problem) == []
    assert {m["name"] for m in plan["models"]} == set(problem.models)


def test_plan_table_and_out_file_is_deterministic(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    r = run("plan", "--out", a)
    assert r.exit_code == 0, r.output
    assert "lower bound" in r.stdout and "best single GPU type" in r.stdout
    assert run("plan", "--out", b, "-q").exit_code == 0
    assert a.read_bytes() == b.read_bytes()
    assert run("check", a).exit_code == 0


def test_check_rejects_a_tampered_plan(tmp_path):
    p = tmp_path / "p.json"
    assert run("plan", "--out", p, "-q").exit_code == 0
    plan = json.loads(p.read_text())
    plan["replicas"][0]["routes"][0]["rps"] *= 3
    p.write_text(json.dumps(plan))
    r = run("check", p)
    assert r.exit_code == 1
    assert "C1" in r.stderr or "C2" in r.stderr


def write(tmp_path, doc, name="w.json"):
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


def model(name="llama-3.1-8b", rate=2.0, **kw):
    return {"name": name, "rate_rps": rate, "slo": {"ttft_ms": 1000, "tpot_ms": 100},
            "buckets": [{"input_tokens": 512, "output_tokens": 128, "share": 1.0}], **kw}


def test_bad_input_exit_2_one_line_no_file(tmp_path):
    w = write(tmp_path, {"models": [model(rate=-3)]})
    out = tmp_path / "plan.json"
    r = run("plan", w, "--out", out)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(w) in lines[0] and "models[0].rate_rps" in lines[0]
    assert "Traceback" not in r.output
    assert not out.exists()


def test_malformed_yaml_exit_2(tmp_path):
    w = tmp_path / "w.yaml"
    w.write_text("models: [\n")
    r = run("plan", w)
    assert r.exit_code == 2 and "malformed YAML" in r.stderr


def test_infeasible_model_exit_3_with_reason(tmp_path):
    w = write(tmp_path, {"models": [model("llama-3.1-405b")], "gpus": [{"name": "A10G"}, {"name": "L4"}]})
    out = tmp_path / "plan.json"
    r = run("plan", w, "--out", out)
    assert r.exit_code == 3
    assert "llama-3.1-405b" in r.stderr and "fits no allowed GPU" in r.stderr and "does not fit" in r.stderr
    assert not out.exists()


def test_infeasible_availability_exit_3_names_gpu(tmp_path):
    w = write(tmp_path, {"models": [model(rate=200.0)], "gpus": [{"name": "A10G", "available": 2}]})
    r = run("plan", w)
    assert r.exit_code == 3 and "A10G" in r.stderr and "available" in r.stderr


def test_profiles_with_names_outside_the_catalogs(tmp_path):
    w = write(tmp_path, {"models": [model("my-finetune", rate=6.0)],
                         "gpus": [{"name": "A10G"}, {"name": "my-asic", "price_per_hour": 0.5}]})
    prof = write(tmp_path, {"entries": [
        {"model": "my-finetune", "gpu": "A10G", "tp": 1, "input_tokens": 512, "output_tokens": 128, "max_rps": 2.5},
        {"model": "my-finetune", "gpu": "my-asic", "tp": 1, "input_tokens": 512, "output_tokens": 128, "max_rps": 1.0},
    ]}, "prof.json")
    r = run("plan", w, "--profiles", prof, "--format", "json", "-q")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["cost_per_hour"] == pytest.approx(min(3 * 1.006, 7 * 0.5, 1.006 * 2 + 0.5 * 2), rel=1e-6)
    assert all(rt["source"] == "measured" for g in plan["replicas"] for rt in g["routes"])


def test_profiles_missing_bucket_is_infeasible_unless_filled(tmp_path):
    w = write(tmp_path, {"models": [model()], "gpus": [{"name": "A10G"}, {"name": "L40S"}]})
    prof = write(tmp_path, {"entries": [
        {"model": "llama-3.1-8b", "gpu": "A10G", "tp": 1, "input_tokens": 999, "output_tokens": 1, "max_rps": 2.5}]},
        "prof.json")
    assert run("plan", w, "--profiles", prof).exit_code == 3
    r = run("plan", w, "--profiles", prof, "--fill-estimates", "--format", "json", "-q")
    assert r.exit_code == 0, r.output
    assert {rt["source"] for g in json.loads(r.stdout)["replicas"] for rt in g["routes"]} == {"estimated"}


def test_bad_profiles_exit_2_names_field(tmp_path):
    prof = write(tmp_path, {"entries": [{"model": "x", "gpu": "A10G", "tp": 1, "input_tokens": 5}]}, "prof.json")
    r = run("plan", "--profiles", prof)
    assert r.exit_code == 2 and "entries[0].output_tokens" in r.stderr


def test_split_example_fractional_routing_is_cheaper():
    args = ("plan", EX / "split.yaml", "--profiles", EX / "split-profiles.json", "--format", "json", "-q")
    split = json.loads(run(*args).stdout)
    whole = json.loads(run(*args, "--whole-buckets").stdout)
    assert split["cost_per_hour"] == pytest.approx(1.006 + 1.861)
    assert whole["cost_per_hour"] == pytest.approx(3 * 1.006)
    assert len(split["replicas"]) == 2


def test_estimate_writes_a_table_that_plans(tmp_path):
    table = tmp_path / "est.json"
    assert run("estimate", "--out", table).exit_code == 0
    doc = json.loads(table.read_text())
    assert doc["entries"] and all(e["max_rps"] > 0 for e in doc["entries"])
    a = json.loads(run("plan", "--profiles", table, "--format", "json", "-q").stdout)
    b = json.loads(run("plan", "--format", "json", "-q").stdout)
    assert a["cost_per_hour"] == pytest.approx(b["cost_per_hour"])


def test_help_version_and_catalog():
    assert run("--version").stdout.startswith("gpumix ")
    for cmd in (["-h"], ["plan", "-h"], ["check", "-h"], ["estimate", "-h"]):
        r = run(*cmd)
        assert r.exit_code == 0 and "Usage" in r.stdout
    assert "WORKLOAD" in run("plan", "--help").stdout
    assert "H100" in run("catalog", "gpus").stdout
    assert "llama-3.1-70b" in run("catalog", "models").stdout


def test_planning_path_never_imports_torch():
    code = ("import sys; from typer.testing import CliRunner; from gpumix.cli.app import app; "
            "r = CliRunner().invoke(app, ['plan', '-q']); assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("cmd", [["plan", "-q", "--no-baseline"], ["estimate"]])
def test_unwritable_out_is_one_line_exit_2(tmp_path, cmd):
    (tmp_path / "file").write_text("")
    r = run(*cmd, "--out", tmp_path / "file" / "out.json")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().count("\n") == 0 and "--out: cannot write" in r.stderr
