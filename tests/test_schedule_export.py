"""Exports of plans with periods: KEDA cron ScaledObjects, SkyServe replica_policy, schedule.csv."""
from __future__ import annotations

import csv
import io
import json

import pytest
import yaml
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.planner.errors import InputError
from gpumix.planner.export import export
from gpumix.planner.export.schedule import cron_windows

runner = CliRunner()


def _group(model, gpu, count, rps):
    return {"model": model, "gpu": gpu, "tp": 1, "count": count,
            "routes": [{"input_tokens": 100, "output_tokens": 10, "rps": rps}]}


def plan_doc(counts, hours=1.0, model="m=1"):
    """A schedule of one model on one GPU type whose replica counts per period are `counts`."""
    periods = [{"index": t, "hours": hours, "cost_per_hour": float(n), "starts": 0, "start_cost": 0.0, "gpus": {},
                "replicas": [_group(model, "L4", n, 1.5 * n)] if n else []} for t, n in enumerate(counts)]
    p = max(range(len(counts)), key=lambda t: counts[t])
    return {"schema_version": 1, "replicas": periods[p]["replicas"], "periods": periods,
            "horizon": {"periods": len(counts), "period_hours": hours, "timezone": "Europe/Berlin",
                        "peak_period": p, "cyclic": True}}


def test_keda_triggers_follow_the_counts():
    counts = [1] * 6 + [3] * 6 + [2] * 6 + [1] * 6
    files = export(plan_doc(counts), ["k8s"])
    name = "m-1-l4-tp1"
    so = yaml.safe_load(files[f"k8s/{name}-scaledobject.yaml"])
    assert so["apiVersion"] == "keda.sh/v1alpha1" and so["kind"] == "ScaledObject"
    spec = so["spec"]
    assert spec["scaleTargetRef"]["name"] == name
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, 3)
    got = [(t["metadata"]["start"], t["metadata"]["end"], t["metadata"]["desiredReplicas"], t["metadata"]["timezone"])
           for t in spec["triggers"]]
    assert got == [("0 6 * * *", "0 12 * * *", "3", "Europe/Berlin"), ("0 12 * * *", "0 18 * * *", "2", "Europe/Berlin")]
    assert all(t["type"] == "cron" for t in spec["triggers"])
    dep = yaml.safe_load(files[f"k8s/{name}-deployment.yaml"])
    assert dep["spec"]["replicas"] == 1  # the minimum; KEDA scales it up
    assert json.loads(files["router-weights.json"])["models"]["m=1"]["buckets"][0]["rps"] == pytest.approx(4.5)


def test_constant_group_gets_no_scaled_object():
    files = export(plan_doc([2] * 24), ["k8s"])
    assert not any(p.endswith("scaledobject.yaml") for p in files)
    assert yaml.safe_load(files["k8s/m-1-l4-tp1-deployment.yaml"])["spec"]["replicas"] == 2


def test_cron_in_minutes_and_refusals():
    assert cron_windows(48, 0.5, "p")[1] == ("30 0 * * *", "0 1 * * *")
    week = cron_windows(7, 24.0, "p")
    assert week[0] == ("0 0 * * 1", "0 0 * * 2") and week[6] == ("0 0 * * 0", "0 0 * * 1")
    with pytest.raises(InputError, match="daily or weekly"):
        cron_windows(12, 1.0, "p")
    with pytest.raises(InputError, match="whole minute"):
        cron_windows(7, 24 / 7, "p")


def test_export_refuses_a_horizon_without_cron_but_writes_other_formats(tmp_path):
    doc = plan_doc([1, 2, 3] * 4)  # 12 hours
    (tmp_path / "p.json").write_text(json.dumps(doc))
    r = runner.invoke(app, ["export", str(tmp_path / "p.json"), "--format", "k8s", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "daily or weekly" in r.output and not (tmp_path / "o").exists()
    files = export(doc, ["skypilot", "vllm"])
    assert "schedule.csv" in files and "vllm/m-1-l4-tp1.sh" in files


def test_skyserve_replica_policy():
    files = export(plan_doc([1] * 12 + [4] * 12), ["skypilot"])
    task = yaml.safe_load(files["skypilot/m-1-l4-tp1.yaml"])
    policy = task["service"]["replica_policy"]
    assert (policy["min_replicas"], policy["max_replicas"]) == (1, 4)
    assert policy["target_qps_per_replica"] == pytest.approx(1.5)
    assert "replicas" not in task["service"]


def test_schedule_csv():
    doc = plan_doc([0, 2, 1] + [1] * 21)
    doc["periods"][1]["replicas"].append(_group("=cmd()", "L4", 1, 0.5))
    rows = list(csv.reader(io.StringIO(export(doc, [])["schedule.csv"])))
    assert rows[0] == ["period", "model", "gpu", "tp", "replicas"]
    assert ["0", "m=1", "L4", "1", "0"] in rows and ["1", "m=1", "L4", "1", "2"] in rows
    assert ["1", "'=cmd()", "L4", "1", "1"] in rows  # no spreadsheet formula
    assert ["2", "'=cmd()", "L4", "1", "0"] in rows
    assert len(rows) == 1 + 24 * 2


def test_export_of_a_planned_schedule_passes_through_the_tree(tmp_path):
    from test_schedule import tiny  # the tiny workload of the planning tests

    rates = [1.0] * 8 + [6.0] * 8 + [2.5] * 8
    w, p = tiny(tmp_path, rates)
    plan = tmp_path / "plan.json"
    assert runner.invoke(app, ["plan", str(w), "--profiles", str(p), "--out", str(plan), "-q"]).exit_code == 0
    r = runner.invoke(app, ["export", str(plan), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "out" / ".gpumix-export.json").read_text())
    paths = {f["path"] for f in manifest["files"]}
    assert "schedule.csv" in paths and any(x.endswith("scaledobject.yaml") for x in paths)
    doc = json.loads(plan.read_text())
    csv_rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "schedule.csv").read_text())))
    for t, e in enumerate(doc["periods"]):
        for g in e["replicas"]:
            assert {"period": str(t), "model": "m", "gpu": g["gpu"], "tp": "1", "replicas": str(g["count"])} in csv_rows
