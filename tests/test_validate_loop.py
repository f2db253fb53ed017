"""The profile -> plan -> validate loop on CPU with a small scaled model: the plan at max_utilization
0.8 holds; the same plan with its routes raised to OVERLOAD_RPS fails naming the group; `gpumix
serve` driven over HTTP measures what the in-process replica measures (within 20%); a replica that
dies mid-run leaves a report.

Load margins (CPU timing on a shared 2-core machine moves by 5x between runs, profiles included):
one replica of SMALL sustains ~30 req/s on an idle machine and ~6 with the cores contended. The
planned load is a quarter of the profiled capacity and at most PASS_RPS (<= 0.5x even contended;
a capacity profiled at a quiet moment must not plan more than a busy moment sustains), measured
for 10 s so the achieved-rate slope is not moved by the bucket mix's spread of end-to-end times.
The overload is ~5x what an idle machine sustains."""
import json
import os

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from test_serve import serve_process, stop
from helpers import tiny_profile_args

torch = pytest.importorskip("torch")
runner = CliRunner()
SMALL = {"hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 1024,
         "num_hidden_layers": 4, "vocab_size": 4096}
WORKLOAD = """
models:
  - name: small
    config: small.json
    rate_rps: {rate}
    slo: {{ttft_ms: 1500, tpot_ms: 100}}
    buckets:
      - {{input_tokens: 48, output_tokens: 16, share: 0.5}}
      - {{input_tokens: 96, output_tokens: 32, share: 0.5}}
gpus:
  - {{name: testcpu, price_per_hour: 0.1}}
max_utilization: 0.8
"""
PROFILE = tiny_profile_args("testcpu")
PASS_SHARE, PASS_RPS = 0.25, 2.5  # the planned load: a quarter of the profiled capacity, at most 2.5 req/s
OVERLOAD_RPS = 150.0
RUN = ["--gpu-name", "testcpu", "--duration", "3", "--drain", "1", "-q"]  # the overload
PASS_RUN = ["--gpu-name", "testcpu", "--duration", "10", "--drain", "2", "-q"]
# endpoint vs in-process pairs: ~15 requests each, since medians of ~7 differ by > 20% on a contended machine
PAIR_RUN = ["--gpu-name", "testcpu", "--duration", "6", "--drain", "2", "-q"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """A fresh CPU profile, then a workload at a quarter of one replica's measured capacity (at
    most PASS_RPS), planned; and the plan with its routes scaled to OVERLOAD_RPS."""
    d = tmp_path_factory.mktemp("loop")
    (d / "small.json").write_text(json.dumps(SMALL))
    (d / "wl.yaml").write_text(WORKLOAD.format(rate=1))
    r = invoke("profile", d / "wl.yaml", "--out", d / "profiles.json", *PROFILE)
    assert r.exit_code == 0, r.output
    entries = json.loads((d / "profiles.json").read_text())["entries"]
    capacity = 1 / sum(0.5 / e["max_rps"] for e in entries)  # one replica at the 50/50 mix
    (d / "wl.yaml").write_text(WORKLOAD.format(rate=round(min(PASS_SHARE * capacity, PASS_RPS), 2)))
    r = invoke("plan", d / "wl.yaml", "--profiles", d / "profiles.json", "--out", d / "plan.json", "-q")
    assert r.exit_code == 0, r.output
    plan = json.loads((d / "plan.json").read_text())
    assert [g["count"] for g in plan["replicas"]] == [1]
    over = json.loads(json.dumps(plan))
    factor = OVERLOAD_RPS / sum(route["rps"] for g in plan["replicas"] for route in g["routes"])
    for g in over["replicas"]:
        for route in g["routes"]:
            route["rps"] *= factor
    (d / "overload.json").write_text(json.dumps(over))
    return d


@pytest.fixture(scope="module")
def in_process(loop):
    r = invoke("validate", loop / "plan.json", "--report", loop / "report.json", *PASS_RUN)
    return r, json.loads((loop / "report.json").read_text())


def test_planned_load_validates_as_passed(loop, in_process):
    r, rep = in_process
    assert r.exit_code == 0, r.output
    (g,) = rep["groups"]
    assert rep["passed"] is True and g["passed"] is True and g["status"] == "passed"
    assert g["achieved_rps"] >= 0.95 * g["planned_rps"] and g["slo_attainment"] >= 0.99
    assert g["run"]["from"] == "profile provenance" and g["run"]["args"]["dim"] == 512
    assert set(g["ttft_ms"]) == {"p50", "p90", "p99"} and g["tpot_ms"]["p50"] > 0
    assert rep["load"]["replicas_per_group"] == 1 and "per-replica load" in rep["load"]["note"]


def test_overload_fails_and_names_the_group(loop):
    r = invoke("validate", loop / "overload.json", loop / "wl.yaml", "--report", loop / "over-report.json", *RUN)
    assert r.exit_code == 1, r.output
    assert "small on testcpu TP1" in r.output and "planned" in r.output
    rep = json.loads((loop / "over-report.json").read_text())
    (g,) = rep["groups"]
    assert rep["passed"] is False and g["status"] == "failed"
    assert g["achieved_rps"] < 0.95 * g["planned_rps"] or g["slo_attainment"] < 0.99
    assert any("C2" in n for n in rep["notes"])  # the checker saw the overload too; validation measured it


def test_endpoint_mode_matches_in_process_within_20_percent(loop):
    """Both modes back to back against the same plan. Other work on this shared 2-core machine
    moves CPU latencies by more than 20% from one run to the next, so a pair that disagrees is
    measured again (three pairs at most); a systematic gap (HTTP, streaming) fails every pair."""
    def close(x, y, rel=0.2, abs_=0.0):
        return abs(x - y) <= rel * max(x, y) + abs_

    proc, url = serve_process("--model", "small", "--workload", loop / "wl.yaml", "--profiles",
                              loop / "profiles.json", "--max-seq", "256")
    try:
        for attempt in range(3):
            # the verdict may flip when the machine is busy; what must agree is the measurement
            r = invoke("validate", loop / "plan.json", "--endpoint", url, "--report", loop / "ep.json", *PAIR_RUN)
            assert r.exit_code in (0, 1), r.output
            r = invoke("validate", loop / "plan.json", "--report", loop / "local.json", *PAIR_RUN)
            assert r.exit_code in (0, 1), r.output
            a, b = (json.loads((loop / f).read_text())["groups"][0] for f in ("local.json", "ep.json"))
            assert a["status"] in ("passed", "failed") and b["status"] in ("passed", "failed"), (a, b)
            pairs = {k: (a[k], b[k]) for k in ("achieved_rps", "ttft_ms", "tpot_ms")}
            ok = (close(a["achieved_rps"], b["achieved_rps"]) and close(a["tpot_ms"]["p50"], b["tpot_ms"]["p50"])
                  and close(a["ttft_ms"]["p50"], b["ttft_ms"]["p50"], abs_=5.0))  # + loopback HTTP, ~ms
            if ok:
                break
    finally:
        stop(proc)
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if not ok and load > 1.5 * cores:  # a verdict on timing needs the cores it measures
        pytest.skip(f"machine oversubscribed (load {load:.1f} on {cores} cores); last pair {pairs}")
    assert ok, pairs


def test_replica_dying_mid_run_is_reported_with_partial_results(loop):
    from gpumix.profiler.validate.run import ValidateOptions, validate

    # killed 2 s in: a contended replica may take over a second to finish its first requests
    opts = ValidateOptions(gpu_name="testcpu", duration_s=4.0, drain_s=1.0, kill_replica_after_s=2.0)
    rep = validate(loop / "plan.json", None, opts)
    (g,) = rep["groups"]
    assert rep["passed"] is False and g["status"] == "error"
    assert any("replica died" in x for x in g["reasons"])
    assert 0 < g["completed"] < g["requests"] and g["tpot_ms"]["p50"] is not None
