"""validate's pieces without a model: arrivals, the achieved-rate estimator, plan input errors,
groups that cannot run here."""
import json
import statistics

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.profiler.load import generator as loadgen
from test_serve import TINY, WORKLOAD, hand_plan

runner = CliRunner()


def test_arrivals_are_seeded_exact_in_count_rate_and_mix():
    routes = [(48, 16, 6.0), (96, 32, 2.0)]
    a = loadgen.arrivals(routes, 5.0, seed=3)
    assert a == loadgen.arrivals(routes, 5.0, seed=3) and a != loadgen.arrivals(routes, 5.0, seed=4)
    assert len(a) == 40 and a[0].t == 0.0
    assert loadgen.offered_rps([a]) == pytest.approx(8.0)
    assert sum(1 for x in a if x.input_tokens == 48) == 30
    assert all(x.t <= y.t for x, y in zip(a, a[1:]))


def test_gamma_arrivals_are_burstier_than_poisson():
    def cv(shape):
        a = loadgen.arrivals([(8, 8, 50.0)], 40.0, seed=1, shape=shape)
        gaps = [y.t - x.t for x, y in zip(a, a[1:])]
        return statistics.pstdev(gaps) / statistics.mean(gaps)
    assert 0.85 < cv(1.0) < 1.15 and cv(0.25) > 1.5


def _records(latency):
    out = []
    for a in loadgen.arrivals([(8, 8, 10.0)], 10.0, seed=0):
        r = loadgen.Record(a, sent=a.t, first=a.t + 0.01, tokens=8)
        r.done = a.t + latency(a.t)
        r.last = r.done
        out.append(r)
    return out


def test_achieved_rate_keeps_pace_or_falls_behind():
    keeps_up = _records(lambda t: 0.3 + 0.2 * (int(t * 7) % 2))  # noisy but flat latency
    assert loadgen.achieved_rps(keeps_up, 10.0, lambda r: r.sent) == pytest.approx(10.0, rel=0.03)
    behind = _records(lambda t: 0.3 + t)  # served at half the offered pace: latency grows 1 s per s
    assert loadgen.achieved_rps(behind, 10.0, lambda r: r.sent) == pytest.approx(5.0, rel=0.03)
    half_failed = keeps_up[:50] + [loadgen.Record(r.arrival, sent=r.sent, error="x") for r in keeps_up[50:]]
    assert loadgen.achieved_rps(half_failed, 10.0, lambda r: r.sent) == pytest.approx(5.0, rel=0.05)


def test_summary_counts_failed_requests_against_the_slo():
    recs = _records(lambda t: 0.3)
    recs[0].error = "boom"
    m = loadgen.summarize(recs, [[r.arrival for r in recs]], ttft_ms=100, tpot_ms=100)
    assert m["requests"] == 100 and m["completed"] == 99 and m["slo_attainment"] == 0.99
    assert m["errors"] == [{"error": "boom", "count": 1}] and m["ttft_ms"]["p50"] == pytest.approx(10.0)


@pytest.fixture
def files(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    (tmp_path / "wl.yaml").write_text(WORKLOAD)
    return tmp_path


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p["replicas"][0].update(count=0), "replicas[0].count"),
    (lambda p: p["replicas"][0].update(model="nope"), "replicas[0].model"),
    (lambda p: p.pop("replicas"), "replicas"),
    (lambda p: p["replicas"][0]["routes"][0].update(rps="x"), "replicas[0].routes[0].rps"),
])
def test_malformed_plan_exits_2_naming_file_and_field(files, mutate, field):
    plan = hand_plan()
    mutate(plan)
    (files / "plan.json").write_text(json.dumps(plan))
    r = runner.invoke(app, ["validate", str(files / "plan.json"), str(files / "wl.yaml"), "--gpu-name", "testcpu"])
    assert r.exit_code == 2, r.output
    line = r.output.strip().splitlines()[-1]
    assert line.startswith("gpumix: error:") and str(files / "plan.json") in line and field in line


def test_unreadable_json_and_missing_workload_exit_2(files):
    (files / "plan.json").write_text("{not json")
    r = runner.invoke(app, ["validate", str(files / "plan.json")])
    assert r.exit_code == 2 and "malformed JSON" in r.output
    plan = hand_plan()
    plan["inputs"]["workload"] = "bundled example"
    (files / "plan.json").write_text(json.dumps(plan))
    r = runner.invoke(app, ["validate", str(files / "plan.json")])
    assert r.exit_code == 2 and "inputs.workload" in r.output


def test_nothing_validated_is_exit_1_and_groups_are_skipped_not_passed(files):
    pytest.importorskip("torch")
    (files / "plan.json").write_text(json.dumps(hand_plan()))
    r = runner.invoke(app, ["validate", str(files / "plan.json"), "--gpu-name", "H100", "--report",
                            str(files / "rep.json"), "-q"])  # workload from the plan's inputs
    assert r.exit_code == 1, r.output
    rep = json.loads((files / "rep.json").read_text())
    assert rep["passed"] is False and rep["validated"] == 0 and rep["skipped"] == 1
    (g,) = rep["groups"]
    assert g["status"] == "skipped" and g["passed"] is None and "testcpu" in g["reasons"][0]
    assert "no group" in rep["failures"][0]
