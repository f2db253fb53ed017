"""SkyPilot catalog CSVs as instance shapes (--catalog): zones folded, GCP GPU rows paired with their
host VM, blank prices and unknown accelerators reported; plans and checks against the CSV."""
import json

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.planner.catalog import load_catalog
from gpumix.planner.errors import InputError
from gpumix.planner.skypilot import load_skypilot_csv
from helpers import LLAMA_8B_WORKLOAD, SKYPILOT_CSV

runner = CliRunner()
CSV = SKYPILOT_CSV

WL = LLAMA_8B_WORKLOAD


def write(tmp_path, text, name="w.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_fixture_rows_become_instances_with_merged_specs():
    sky = load_skypilot_csv(CSV, load_catalog())
    by = {t.name: t for t in sky.instances}
    assert set(by) == {"p5.48xlarge", "g6.xlarge", "g6.12xlarge", "g5.xlarge", "p4d.24xlarge",
                       "a2-highgpu-1g+1xA100"}
    p5 = by["p5.48xlarge"]
    assert (p5.gpu, p5.gpus, p5.price_per_hour, p5.region) == ("H100", 8, 98.32, "us-east-1")
    assert p5.spot_price_per_hour == 27.5  # median of the three zones
    assert by["g6.xlarge"].spot_price_per_hour == 0.4128  # the zone without a spot price is ignored
    assert by["p4d.24xlarge"].gpu == "A100-40GB"  # SkyPilot "A100" is the 40 GB part
    gcp = by["a2-highgpu-1g+1xA100"]
    assert gcp.price_per_hour == pytest.approx(2.939 + 0.749) and gcp.region == "us-central1"
    assert gcp.spot_price_per_hour == pytest.approx(0.88 + 0.224)
    notes = " | ".join(sky.notes)
    assert "blank on-demand price" in notes  # g6e.xlarge
    assert "fractional accelerator count" in notes  # the Azure 1/6 A10
    assert "GCP accelerator without its host VM" in notes  # T4 without an n1 row
    assert "Gaudi HL-205" in notes  # unknown accelerators are named, not silently dropped


def test_unknown_accelerators_kept_when_a_throughput_table_sizes_them():
    sky = load_skypilot_csv(CSV, load_catalog(), need_shapes=False)
    assert any(t.gpu == "Gaudi HL-205" for t in sky.instances)


def test_not_a_catalog_names_the_column(tmp_path):
    bad = write(tmp_path, "InstanceType,Price\nx,1\n", "bad.csv")
    with pytest.raises(InputError, match="AcceleratorName"):
        load_skypilot_csv(bad, load_catalog())
    r = runner.invoke(app, ["plan", str(write(tmp_path, WL)), "--catalog", str(bad), "-q"])
    assert r.exit_code == 2 and "AcceleratorName" in r.output
    r = runner.invoke(app, ["plan", str(write(tmp_path, WL)), "--catalog", str(tmp_path / "none.csv"), "-q"])
    assert r.exit_code == 2 and "file not found" in r.output


def test_plan_with_catalog_rents_csv_instances_and_checks(tmp_path):
    w = write(tmp_path, WL)
    r = runner.invoke(app, ["plan", str(w), "--catalog", str(CSV), "--format", "json"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    names = {t.name for t in load_skypilot_csv(CSV, load_catalog()).instances}
    assert plan["nodes"] and {n["instance"] for n in plan["nodes"]} <= names
    assert plan["inputs"]["catalog"] == str(CSV)
    assert "Gaudi HL-205" in r.stderr  # the notes reach people
    p = write(tmp_path, r.stdout, "plan.json")
    assert runner.invoke(app, ["check", str(p), str(w), "--catalog", str(CSV)]).exit_code == 0


def test_workload_instances_resolve_against_the_csv(tmp_path):
    w = write(tmp_path, WL + "instances: [g6.xlarge, g6.12xlarge]\n")
    r = runner.invoke(app, ["plan", str(w), "--catalog", str(CSV), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    assert {n["instance"] for n in json.loads(r.stdout)["nodes"]} <= {"g6.xlarge", "g6.12xlarge"}
    w = write(tmp_path, WL + "instances: [p5en.48xlarge]\n")  # bundled, but not in this CSV
    r = runner.invoke(app, ["plan", str(w), "--catalog", str(CSV), "-q"])
    assert r.exit_code == 2 and "instances[0]" in r.output
