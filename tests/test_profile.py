"""`gpumix profile` end to end on a tiny model, the fitted latency model, calibration, vLLM import."""
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from helpers import TINY_CONFIG
from gpumix.planner.catalog import load_catalog
from gpumix.planner.profiles import load_profiles
from gpumix.profiler.measure import calibrate as cal
from gpumix.profiler.measure.fit import LatencyModel, Sample, fit, holdout_error
from gpumix.planner.roofline import Efficiency, decode_step_s, estimate, prefill_s, slo_capacity

runner = CliRunner()
CAT = load_catalog()
TINY = TINY_CONFIG
WORKLOAD = """
models:
  - name: tiny
    config: tiny.json
    rate_rps: 2
    slo: {ttft_ms: 5000, tpot_ms: 1000}
    buckets:
      - {input_tokens: 48, output_tokens: 16, share: 0.5}
      - {input_tokens: 96, output_tokens: 32, share: 0.5}
gpus:
  - {name: testcpu, price_per_hour: 0.1}
"""
SWEEP = ["--prefill-lens", "16,48,96", "--batches", "1,2,4", "--contexts", "32,128", "--iters", "1",
         "--rounds", "1", "--dtype", "fp32", "--threads", "1", "-q"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def workload(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    path = tmp_path / "wl.yaml"
    path.write_text(WORKLOAD)
    return path


def test_profile_tp1_tp2_writes_the_contract_and_plans(workload, tmp_path):
    pytest.importorskip("torch")
    out, eff = tmp_path / "p.json", tmp_path / "eff.json"
    r = invoke("profile", workload, "--tp", "1,2", "--gpu-name", "testcpu", "--out", out,
               "--calibrate", eff, *SWEEP)
    assert r.exit_code == 0, r.output
    entries = load_profiles(out)  # the `plan --profiles` contract
    assert {(e.tp, e.input_tokens) for e in entries} == {(1, 48), (1, 96), (2, 48), (2, 96)}
    assert all(e.source == "measured" and e.gpu == "testcpu" and e.max_rps > 0 for e in entries)
    doc = json.loads(out.read_text())
    prov = doc["profiles"][0]["provenance"]
    assert prov["dtype"] == "fp32" and prov["torch"] and prov["date"] and prov["device"] == "cpu"
    assert {p["tp"] for p in doc["profiles"]} == {1, 2}
    assert len(doc["profiles"][0]["samples"]) == 3 + 6
    written = json.loads(eff.read_text())  # the user efficiency file: fitted factors, spec, provenance
    assert written["gpus"]["testcpu"]["spec"]["memory_bandwidth_gbps"] > 0
    assert written["calibrations"]["testcpu"]["fitted"] and str(out) in written["calibrations"]["testcpu"]["profiles"]
    r = invoke("plan", workload, "--profiles", out, "--format", "json", "-q")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["cost_per_hour"] > 0

    # a second profile merges instead of overwriting: TP 1 replaced, TP 2 kept
    before = {(p["tp"], p["provenance"]["date"]) for p in doc["profiles"]}
    r = invoke("profile", "run", workload, "--tp", "1", "--gpu-name", "testcpu", "--out", out, *SWEEP)
    assert r.exit_code == 0, r.output
    doc2 = json.loads(out.read_text())
    assert len(doc2["entries"]) == 4 and {p["tp"] for p in doc2["profiles"]} == {1, 2}
    assert len(doc2["profiles"]) == 2 and before


def test_profile_scaling_is_recorded(workload, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "p.json"
    r = invoke("profile", workload, "--gpu-name", "testcpu", "--out", out, "--scale-layers", "1",
               "--scale-hidden", "0.5", *SWEEP)
    assert r.exit_code == 0, r.output
    p = json.loads(out.read_text())["profiles"][0]
    assert p["model"] == "tiny" and p["provenance"]["scaled"]
    assert p["run_shape"]["num_layers"] == 1 and p["run_shape"]["num_heads"] == 2


@pytest.mark.parametrize("args,field", [
    (["--tp", "1,x"], "--tp"), (["--tp", "3"], "models[0]"), (["--device", "tpu"], "--device"),
    (["--dtype", "int4"], "--dtype")])
def test_profile_bad_input_exit_2(workload, tmp_path, args, field):
    r = invoke("profile", workload, "--out", tmp_path / "p.json", *SWEEP, *args)
    assert r.exit_code == 2, r.output
    assert field in r.output and len(r.output.strip().splitlines()) == 1


def test_profile_refuses_to_merge_into_a_non_table(workload, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("[1, 2]")
    r = invoke("profile", workload, "--out", bad, *SWEEP)
    assert r.exit_code == 2 and "p.json" in r.output


def _grid(lm: LatencyModel, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    pts = [Sample("prefill", 1, n, 0) for n in (32, 64, 128, 256, 512, 1024, 2048)]
    pts += [Sample("decode", b, c, 0) for b in (1, 2, 4, 8, 16, 32) for c in (128, 512, 2048)]
    return [Sample(s.kind, s.batch, s.tokens, lm.predict(s) * (1 + noise * rng.standard_normal()))
            for s in pts]


def test_fit_recovers_a_latency_model_and_predicts_held_out_points():
    true = LatencyModel((5.0, 0.3, 1e-4), (8.0, 0.5, 2e-4))
    got = fit(_grid(true))
    assert np.allclose(got.prefill, true.prefill, rtol=1e-6) and np.allclose(got.decode, true.decode, rtol=1e-6)
    h = holdout_error(_grid(true, noise=0.02))
    assert h["median"] < 0.05 and h["p90"] < 0.15
    assert all(c >= 0 for c in fit(_grid(LatencyModel((0.0, 1.0, 0.0), (3.0, 0.0, 1e-3)), 0.05)).decode)


def test_calibration_recovers_efficiency_factors_from_roofline_times():
    gpu, true = CAT.gpu("H100"), Efficiency(decode_mbu=0.5, prefill_mfu=0.3, step_overhead_ms=3.0)
    runs = []
    for name, tp in (("llama-3.1-8b", 1), ("qwen2.5-7b", 2)):
        shape = CAT.model(name)
        s = [Sample("prefill", 1, n, 1e3 * prefill_s(shape, gpu, tp, n, true)) for n in (128, 1024, 4096)]
        s += [Sample("decode", b, c, 1e3 * decode_step_s(shape, gpu, tp, b, c, true))
              for b in (1, 8, 64) for c in (512, 4096)]
        runs.append(cal.Measured(shape, tp, 2, tuple(s)))
    c = cal.calibrate(runs, gpu, Efficiency())
    assert c.error_after < 0.02 < c.error_before
    assert math.isclose(c.factors["decode_mbu"], 0.5, rel_tol=0.1)
    # the calibrated factors improve the estimate for a model that was not measured
    held = CAT.model("llama-3.1-70b")
    truth = estimate(held, gpu, 4, 512, 128, 2000, 80, true).max_rps
    before = estimate(held, gpu, 4, 512, 128, 2000, 80, Efficiency()).max_rps
    after = estimate(held, gpu, 4, 512, 128, 2000, 80, Efficiency(**{**Efficiency().__dict__, **c.factors})).max_rps
    assert abs(after / truth - 1) < abs(before / truth - 1)


def test_slo_capacity_is_the_roofline_estimate_math():
    shape, gpu, eff = CAT.model("llama-3.1-8b"), CAT.gpu("L40S"), Efficiency()
    est = estimate(shape, gpu, 1, 1024, 256, 1000, 50, eff)
    t_p = prefill_s(shape, gpu, 1, 1024, eff)
    state, why = slo_capacity(t_p, lambda b: decode_step_s(shape, gpu, 1, b, 1024 + 257 / 2, eff), 256,
                              1000, 50, est.max_batch_memory)
    assert not why and state.batch == est.batch and math.isclose(state.rate, est.max_rps)
    assert "TPOT" in slo_capacity(0.1, lambda b: 0.2, 10, 1000, 50, 10)[1]


def vllm_result(path, rate, rps, p99_ttft, p99_tpot, n=100, n_in=512, n_out=128):
    path.write_text(json.dumps({
        "date": "20250101-000000", "backend": "vllm", "model_id": "meta-llama/Llama-3.1-8B-Instruct",
        "num_prompts": n, "request_rate": rate, "completed": n, "total_input_tokens": n * n_in,
        "total_output_tokens": n * n_out, "request_throughput": rps, "output_throughput": rps * n_out,
        "mean_ttft_ms": p99_ttft / 2, "median_ttft_ms": p99_ttft / 2, "p99_ttft_ms": p99_ttft,
        "mean_tpot_ms": p99_tpot / 2, "median_tpot_ms": p99_tpot / 2, "p99_tpot_ms": p99_tpot}))
    return path


def test_import_vllm_picks_the_best_rate_within_the_slo(tmp_path):
    files = [vllm_result(tmp_path / "a.json", 2, 1.98, 300, 30), vllm_result(tmp_path / "b.json", 8, 7.6, 700, 55),
             vllm_result(tmp_path / "c.json", "inf", 11.0, 4000, 90)]
    out = tmp_path / "p.json"
    r = invoke("profile", "import-vllm", *files, "--gpu", "H100", "--ttft-ms", 1000, "--tpot-ms", 60,
               "--model", "llama-3.1-8b", "--out", out)
    assert r.exit_code == 0, r.output
    (e,) = load_profiles(out)
    assert (e.model, e.gpu, e.tp, e.input_tokens, e.output_tokens, e.max_rps, e.source) == \
        ("llama-3.1-8b", "H100", 1, 512, 128, 7.6, "vllm")
    wl = tmp_path / "wl.yaml"
    wl.write_text("models:\n  - name: llama-3.1-8b\n    rate_rps: 5\n    slo: {ttft_ms: 1000, tpot_ms: 60}\n"
                  "    buckets: [{input_tokens: 512, output_tokens: 128, share: 1}]\n"
                  "gpus: [{name: H100, price_per_hour: 12.29}]\n")
    r = invoke("profile", "import-vllm", *files, "--gpu", "H100", "--workload", wl, "--out", tmp_path / "q.json")
    assert r.exit_code == 0, r.output
    assert load_profiles(tmp_path / "q.json")[0].max_rps == 7.6  # model_id mapped to the workload's name
    r = invoke("plan", wl, "--profiles", tmp_path / "q.json", "-q", "--format", "json")
    assert r.exit_code == 0, r.output


def test_import_vllm_records_the_servers_precision(tmp_path):
    files = [vllm_result(tmp_path / "a.json", 8, 7.6, 700, 55)]
    out = tmp_path / "p.json"
    r = invoke("profile", "import-vllm", *files, "--gpu", "H100", "--ttft-ms", 1000, "--tpot-ms", 60,
               "--model", "llama-3.1-8b", "--quantization", "fp8", "--out", out)
    assert r.exit_code == 0, r.output
    (e,) = load_profiles(out)
    assert (e.quantization, e.kv_cache_dtype, e.max_rps) == ("fp8", "auto", 7.6)
    r = invoke("profile", "import-vllm", *files, "--gpu", "H100", "--quantization", "nf4", "--out", tmp_path / "q.json")
    assert r.exit_code == 2 and "--quantization" in r.output and not (tmp_path / "q.json").exists()


def test_import_vllm_bad_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"model_id": "x", "completed": 10}))
    r = invoke("profile", "import-vllm", bad, "--gpu", "H100", "--out", tmp_path / "p.json")
    assert r.exit_code == 2 and "bad.json" in r.output and "total_input_tokens" in r.output
