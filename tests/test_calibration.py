"""Calibration that transfers: the user efficiency file (written only where asked, never inside the
package; read by plan/estimate with --efficiency), the regularized fit, GPU types from a measured spec.

No timing: samples are made from roofline times with known factors.
"""
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR
from gpumix.planner.catalog import GpuSpec, load_catalog
from gpumix.planner.efficiency import inside_package, with_efficiency
from gpumix.planner.errors import InputError
from gpumix.planner.roofline import Efficiency, decode_step_s, prefill_s
from gpumix.profiler.measure import calibrate as cal
from gpumix.profiler.measure.fit import Sample

runner = CliRunner()
CAT = load_catalog()
WORKLOAD = """
models:
  - name: llama-3.1-8b
    rate_rps: 4
    slo: {ttft_ms: 2000, tpot_ms: 80}
    buckets: [{input_tokens: 512, output_tokens: 128, share: 1}]
gpus:
  - {name: L4}
  - {name: L40S}
"""
LOCAL_SPEC = {"memory_gb": 48, "memory_bandwidth_gbps": 1500, "bf16_tflops": 200}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def workload(tmp_path):
    path = tmp_path / "wl.yaml"
    path.write_text(WORKLOAD)
    return path


def write(path, doc):
    path.write_text(json.dumps(doc))
    return path


def estimates(result) -> dict:
    assert result.exit_code == 0, result.output
    return {(e["gpu"], e["tp"]): e["max_rps"] for e in json.loads(result.stdout)["entries"]}


# --- the efficiency file in planning ------------------------------------------------------------

def test_efficiency_file_changes_estimates_and_plans(workload, tmp_path):
    slow = write(tmp_path / "slow.json", {"schema_version": 1, "defaults": {"decode_mbu": 0.3},
                                          "gpus": {"L4": {"step_overhead_ms": 5.0}}})
    base, tuned = estimates(invoke("estimate", workload)), estimates(invoke("estimate", workload, "--efficiency", slow))
    assert tuned and set(tuned) <= set(base)  # slower decode everywhere: some L4 configs miss the SLO
    assert all(tuned[k] < base[k] for k in tuned)
    r0 = invoke("plan", workload, "--format", "json", "-q")
    r1 = invoke("plan", workload, "--format", "json", "-q", "--efficiency", slow)
    assert r0.exit_code == 0 and r1.exit_code == 0, r1.output
    p0, p1 = json.loads(r0.stdout), json.loads(r1.stdout)
    assert p1["cost_per_hour"] > p0["cost_per_hour"] and p1["inputs"]["efficiency"] == str(slow)


def test_overlay_order_file_defaults_then_per_gpu_entries(tmp_path):
    f = write(tmp_path / "e.json", {"defaults": {"step_overhead_ms": 1.0, "decode_mbu": 0.5},
                                    "gpus": {"h100": {"decode_mbu": 0.8}}})
    c = with_efficiency(CAT, f)
    assert c.gpu_efficiency("H100")["decode_mbu"] == 0.8  # names normalise to the catalog's
    assert c.gpu_efficiency("H200")["decode_mbu"] == 0.5  # file default over bundled default
    assert c.gpu_efficiency("H200")["step_overhead_ms"] == 1.0
    assert c.gpu_efficiency("A10G")["step_overhead_ms"] == 2.0  # bundled per-GPU entry over defaults
    assert CAT.gpu_efficiency("H200")["decode_mbu"] == 0.65  # the bundled catalog is untouched


@pytest.mark.parametrize("doc,field", [
    ({"defaults": {"decode_mbuu": 0.5}}, "defaults.decode_mbuu"),
    ({"defaults": {"decode_mbu": 1.5}}, "defaults.decode_mbu"),
    ({"gpus": {"L4": {"prefill_mfu": "fast"}}}, "gpus.L4.prefill_mfu"),
    ({"gpus": {"L4": {"step_overhead_ms": -1}}}, "gpus.L4.step_overhead_ms"),
    ({"gpus": {"L4": {"max_batch": 2.5}}}, "gpus.L4.max_batch"),
    ({"gpus": {"L4": []}}, "gpus.L4"),
    ({"schema_version": 2}, "schema_version"),
    ({"factors": {}}, "factors"),
    ({"gpus": {"mine": {"spec": {"memory_gb": 8}}}}, "gpus.mine.spec.memory_bandwidth_gbps"),
    ({"gpus": {"H100": {"spec": LOCAL_SPEC}}}, "gpus.H100.spec"),
])
def test_bad_efficiency_file_exits_2_naming_file_and_field(workload, tmp_path, doc, field):
    bad = write(tmp_path / "bad.json", doc)
    for cmd in ("estimate", "plan"):
        r = invoke(cmd, workload, "--efficiency", bad, *(["-q"] if cmd == "plan" else []))
        assert r.exit_code == 2, r.output
        line = r.output.strip()
        assert len(line.splitlines()) == 1 and "bad.json" in line and field in line


def test_missing_or_malformed_efficiency_file_exits_2(workload, tmp_path):
    (tmp_path / "broken.json").write_text("{")
    for name in ("absent.json", "broken.json"):
        r = invoke("estimate", workload, "--efficiency", tmp_path / name)
        assert r.exit_code == 2 and name in r.output


def test_a_gpu_outside_the_catalog_with_a_spec_gets_estimates(tmp_path):
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD.replace("  - {name: L40S}", "  - {name: cpu-local, price_per_hour: 0.5}"))
    r = invoke("estimate", wl)
    assert r.exit_code == 2 and "cpu-local" in r.output  # unknown without a spec
    eff = write(tmp_path / "e.json", {"gpus": {"cpu-local": {"decode_mbu": 0.5, "spec": LOCAL_SPEC}}})
    got = estimates(invoke("estimate", wl, "--efficiency", eff))
    assert got[("cpu-local", 1)] > 0 and ("cpu-local", 2) not in got  # one device a node by default
    r = invoke("plan", wl, "--efficiency", eff, "--format", "json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["cost_per_hour"] > 0


# --- writing: only the user's file ----------------------------------------------------------------

def _profile_table(path, gpu="H100", spec=None):
    """A throughput table with stored samples, as `gpumix profile` writes it (no timing)."""
    true = Efficiency(decode_mbu=0.5, prefill_mfu=0.35, step_overhead_ms=2.5)
    gpu_spec = spec or CAT.gpu(gpu)
    profiles = []
    for name in ("llama-3.1-8b", "qwen2.5-7b"):
        shape = CAT.model(name)
        profiles.append({
            "model": name, "gpu": gpu, "tp": 1, "provenance": {"dtype": "bf16", "device_name": "test"},
            "run_shape": {k: v for k, v in shape.__dict__.items() if k not in ("name", "source")},
            "fit": {"prefill_ms": {"a": 1, "b": 0, "c": 0}, "decode_ms": {"a": 1, "b": 0, "c": 0}},
            "samples": [s.to_dict() for s in _samples(shape, gpu_spec, 1, true)]})
    doc = {"entries": [], "profiles": profiles}
    if spec is not None:
        doc["calibration"] = {gpu: {"spec": spec.__dict__ | {"aliases": []}}}
    path.write_text(json.dumps(doc))
    return path


def test_calibrate_writes_only_out_and_records_provenance(tmp_path):
    table = _profile_table(tmp_path / "p.json")
    bundled = (DATA_DIR / "efficiency.json").read_text()
    out = tmp_path / "mine.json"
    r = invoke("profile", "calibrate", table, "--out", out)
    assert r.exit_code == 0, r.output
    assert (DATA_DIR / "efficiency.json").read_text() == bundled
    doc = json.loads(out.read_text())
    assert set(doc["gpus"]["H100"]) >= {"decode_mbu", "prefill_mfu", "step_overhead_ms"}
    assert "spec" not in doc["gpus"]["H100"]  # a catalog GPU keeps the catalog's spec
    prov = doc["calibrations"]["H100"]
    assert prov["profiles"] == [str(table)] and prov["models"] == ["llama-3.1-8b", "qwen2.5-7b"]
    assert prov["median_error_after"] < prov["median_error_before"] and "worst_error_after" in prov
    assert prov["held"]["allreduce_latency_us"] == "no TP > 1 samples"
    assert math.isclose(doc["gpus"]["H100"]["decode_mbu"], 0.5, rel_tol=0.05)
    # the written file is a valid --efficiency file
    assert with_efficiency(CAT, out).gpu_efficiency("H100")["decode_mbu"] == doc["gpus"]["H100"]["decode_mbu"]


def test_calibrate_efficiency_option_still_names_the_file_to_update(tmp_path):
    table = _profile_table(tmp_path / "p.json")
    mine = write(tmp_path / "mine.json", {"schema_version": 1, "gpus": {"L4": {"step_overhead_ms": 3.0}}})
    r = invoke("profile", "calibrate", table, "--efficiency", mine)
    assert r.exit_code == 0, r.output
    doc = json.loads(mine.read_text())
    assert doc["gpus"]["L4"] == {"step_overhead_ms": 3.0} and "H100" in doc["gpus"]
    # --efficiency to merge from, --out to write: the first file is left as it was
    out = tmp_path / "out.json"
    before = mine.read_text()
    r = invoke("profile", "calibrate", table, "--efficiency", mine, "--out", out)
    assert r.exit_code == 0, r.output
    assert mine.read_text() == before and set(json.loads(out.read_text())["gpus"]) == {"L4", "H100"}


@pytest.mark.parametrize("option", ["--out", "--efficiency"])
def test_calibrate_refuses_a_path_inside_the_package(tmp_path, option):
    table = _profile_table(tmp_path / "p.json")
    target = DATA_DIR / "efficiency.json"
    before = target.read_text()
    r = invoke("profile", "calibrate", table, option, target)
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "package" in r.output
    assert target.read_text() == before
    assert inside_package(DATA_DIR / "new.json") and not inside_package(tmp_path / "x.json")


def test_profile_run_refuses_a_package_calibrate_target(tmp_path):
    r = invoke("profile", "run", "--calibrate", DATA_DIR / "efficiency.json", "--out", tmp_path / "p.json")
    assert r.exit_code == 2 and "--calibrate" in r.output and "package" in r.output


def test_calibration_of_an_uncatalogued_device_carries_its_spec_to_planning(tmp_path):
    spec = GpuSpec("cpu-local", 48.0, 1500.0, 200.0, 32.0, 1)
    table = _profile_table(tmp_path / "p.json", gpu="cpu-local", spec=spec)
    out = tmp_path / "mine.json"
    r = invoke("profile", "calibrate", table, "--out", out)
    assert r.exit_code == 0, r.output
    entry = json.loads(out.read_text())["gpus"]["cpu-local"]
    assert entry["spec"]["memory_bandwidth_gbps"] == 1500.0 and entry["spec"]["gpus_per_node"] == 1
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD.replace("  - {name: L40S}", "  - {name: cpu-local, price_per_hour: 0.5}"))
    assert estimates(invoke("estimate", wl, "--efficiency", out))[("cpu-local", 1)] > 0


# --- the regularized fit -------------------------------------------------------------------------

def _samples(shape, gpu, tp, eff, noise=0.0, seed=0, lens=(128, 1024, 4096),
             decode=((1, 512), (1, 4096), (8, 512), (8, 4096), (64, 512), (64, 4096), (256, 2048))):
    rng = np.random.default_rng(seed)
    jitter = (lambda: 1 + noise * rng.standard_normal()) if noise else (lambda: 1.0)
    s = [Sample("prefill", 1, n, 1e3 * prefill_s(shape, gpu, tp, n, eff) * jitter()) for n in lens]
    s += [Sample("decode", b, c, 1e3 * decode_step_s(shape, gpu, tp, b, c, eff) * jitter()) for b, c in decode]
    return s


def test_regularized_fit_recovers_known_factors():
    gpu = CAT.gpu("H100")
    true = Efficiency(decode_mbu=0.45, prefill_mfu=0.3, decode_mfu=0.25, step_overhead_ms=3.0,
                      allreduce_latency_us=40.0)
    runs = [cal.Measured(CAT.model(name), tp, 2, tuple(_samples(CAT.model(name), gpu, tp, true)))
            for name, tp in (("llama-3.1-8b", 1), ("qwen2.5-7b", 2), ("llama-3.1-70b", 4), ("qwen2.5-14b", 2))]
    c = cal.calibrate(runs, gpu, Efficiency())
    assert c.error_after < 0.01 < c.error_before
    for k in ("decode_mbu", "prefill_mfu", "step_overhead_ms"):
        assert math.isclose(c.factors[k], getattr(true, k), rel_tol=0.05), (k, c.factors)


def test_few_uninformative_samples_stay_near_the_defaults():
    gpu, start = CAT.gpu("H100"), Efficiency()
    shape = CAT.model("llama-3.1-8b")
    # two memory-bound decode steps at batch 1, 10% off the defaults' prediction
    samples = tuple(Sample("decode", 1, c, 1.1e3 * decode_step_s(shape, gpu, 1, 1, c, start)) for c in (512, 1024))
    c = cal.calibrate([cal.Measured(shape, 1, 2, samples)], gpu, start)
    assert {"prefill_mfu", "decode_mfu", "allreduce_latency_us"} <= set(c.held)  # nothing shapes them
    for k, v in c.factors.items():
        assert abs(math.log(v / getattr(start, k))) < math.log(1.2), (k, v)


def test_noisy_one_model_fit_stays_within_physical_bounds():
    gpu = CAT.gpu("L4")
    true = Efficiency(decode_mbu=0.7, prefill_mfu=0.6, step_overhead_ms=1.0)
    run = cal.Measured(CAT.model("qwen2.5-7b"), 1, 2,
                       tuple(_samples(CAT.model("qwen2.5-7b"), gpu, 1, true, noise=0.3, seed=3)))
    c = cal.calibrate([run], gpu, Efficiency())
    for k, v in c.factors.items():
        lo, hi = cal.FIT_BOUNDS[k]
        assert lo <= v <= hi
    assert c.factors["decode_mbu"] <= 0.95 and c.factors.get("prefill_mfu", 0.5) <= 0.85


def test_calibration_refuses_a_bad_file_to_merge_into(tmp_path):
    bad = write(tmp_path / "bad.json", {"gpus": {"H100": {"decode_mbu": 7}}})
    rec = {"gpu": "H100", "factors": {"decode_mbu": 0.5}}
    with pytest.raises(InputError, match="gpus.H100.decode_mbu"):
        cal.write_efficiency(bad, rec, {})


def test_check_and_sweep_take_the_efficiency_file(workload, tmp_path):
    slow = write(tmp_path / "slow.json", {"defaults": {"decode_mbu": 0.3}})
    plan = tmp_path / "plan.json"
    r = invoke("plan", workload, "--efficiency", slow, "--out", plan, "-q", "--no-baseline")
    assert r.exit_code == 0, r.output
    assert invoke("check", plan, workload, "--efficiency", slow).exit_code == 0
    fast = tmp_path / "fast.json"
    assert invoke("plan", workload, "--out", fast, "-q", "--no-baseline").exit_code == 0
    assert invoke("check", fast, workload, "--efficiency", slow).exit_code == 1  # too few replicas at mbu 0.3
    r = invoke("sweep", workload, "--scale", "1", "--format", "json", "-q", "--efficiency", slow)
    assert r.exit_code == 0, r.output
    point = json.loads(r.stdout)["points"][0]
    assert math.isclose(point["cost_per_hour"], json.loads(plan.read_text())["cost_per_hour"])
