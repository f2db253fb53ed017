"""Precision as a decision: weight/KV bytes and tensor rates per GPU, the solver's choice, plans,
exports, the latency table, and refusals (docs/capacity-model.md, "Precision")."""
import json

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR
from gpumix.planner.catalog import load_catalog
from gpumix.planner.checker import check_plan
from gpumix.planner.precision import Precision, compute_tflops, unsupported
from gpumix.planner.roofline import GB, Efficiency, at_concurrency, estimate, weight_bytes
from gpumix.solvers.pipeline import load_problem

runner = CliRunner()
CAT = load_catalog()
EFF = Efficiency()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def workload(tmp_path, gpus, quantization=None, kv=None, model="llama-3.1-70b", rate=4.0, tpot=60,
             name="w.json", **extra):
    m = {"name": model, "rate_rps": rate, "slo": {"ttft_ms": 2000, "tpot_ms": tpot},
         "buckets": [{"input_tokens": 1000, "output_tokens": 250, "share": 1.0}], **extra}
    if quantization is not None:
        m["quantization"] = quantization
    if kv is not None:
        m["kv_cache_dtype"] = kv
    path = tmp_path / name
    path.write_text(json.dumps({"models": [m], "gpus": [{"name": g} for g in gpus]}))
    return path


def plan_of(path, *args):
    r = run("plan", path, "--format", "json", "-q", *args)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_bytes_and_rates_follow_the_support_matrix():
    shape, h100, a100, v100 = CAT.model("llama-3.1-70b"), CAT.gpu("H100"), CAT.gpu("A100-80GB"), CAT.gpu("V100")
    bf16 = weight_bytes(shape, 1, EFF) / GB
    fp8 = weight_bytes(shape, 1, EFF, Precision("fp8")) / GB
    awq = weight_bytes(shape, 1, EFF, Precision("awq")) / GB
    assert 140 < bf16 < 142
    assert 70 < fp8 < 73  # linear layers at 1 byte, embeddings and lm_head at 2
    assert 35 <= awq <= 40  # the AWQ 70B: 4-bit + group scales + 16-bit embeddings
    assert compute_tflops(Precision("fp8"), h100) == h100.fp8_tflops
    assert compute_tflops(Precision("fp8"), a100) == a100.bf16_tflops  # Marlin W8A16 on Ampere
    assert compute_tflops(Precision("int8"), a100) == a100.int8_tops
    assert compute_tflops(Precision("awq"), h100) == h100.bf16_tflops  # weight-only: 16-bit GEMMs
    assert unsupported(Precision("fp8"), v100) and unsupported(Precision("awq"), v100)
    assert not unsupported(Precision("gptq"), v100)
    assert unsupported(Precision("awq"), CAT.gpu("MI300X")) and not unsupported(Precision("fp8"), CAT.gpu("MI300X"))
    assert unsupported(Precision("none", "fp8"), CAT.gpu("T4")) and not unsupported(Precision("none", "fp8"), a100)
    # an fp8 KV cache halves KV bytes: twice the tokens
    lat16 = at_concurrency(shape, h100, 4, 1000, 250, 1, EFF)
    lat8 = at_concurrency(shape, h100, 4, 1000, 250, 1, EFF, Precision("none", "fp8"))
    assert lat8.kv_cache_tokens == pytest.approx(2 * lat16.kv_cache_tokens, rel=1e-3)


def test_fp8_on_hopper_is_faster_than_bf16_and_unsupported_precisions_get_no_capacity():
    shape, h100 = CAT.model("llama-3.1-8b"), CAT.gpu("H100")
    a = estimate(shape, h100, 1, 1000, 250, 2000, 60, EFF)
    b = estimate(shape, h100, 1, 1000, 250, 2000, 60, EFF, Precision("fp8"))
    assert b.max_rps > a.max_rps and b.tpot_ms < a.tpot_ms
    v = estimate(shape, CAT.gpu("V100"), 1, 1000, 250, 2000, 60, EFF, Precision("fp8"))
    assert v.max_rps == 0 and "V100" in v.reason and "no kernel" in v.reason


def test_a_precision_list_is_a_decision_the_plan_records(tmp_path):
    gpus = ["A100-80GB", "H100"]
    costs = {q: plan_of(workload(tmp_path, gpus, q, name=f"{q}.json"))["cost_per_hour"] for q in ("none", "fp8")}
    path = workload(tmp_path, gpus, ["none", "fp8"])
    plan = plan_of(path)
    assert plan["status"] == "optimal"
    assert plan["cost_per_hour"] == pytest.approx(min(costs.values()))
    cheaper = min(costs, key=costs.get)
    assert cheaper == "fp8" and costs["fp8"] < costs["none"]  # FP8 halves 70B's weights and bytes/step
    assert {g["quantization"] for g in plan["replicas"]} == {"fp8"}
    assert all(g["kv_cache_dtype"] == "auto" for g in plan["replicas"])
    _, problem, _ = load_problem(path, None)
    assert {c.quantization for c in problem.configs} == {"none", "fp8"}
    assert check_plan(plan, problem) == []
    # the report and the exports say it too
    r = run("plan", path, "-q")
    assert "fp8" in r.stdout and "precision" in r.stdout


def test_exports_pass_quantization_and_kv_cache_dtype(tmp_path):
    path = workload(tmp_path, ["H100"], "fp8", "fp8")
    plan_path = tmp_path / "plan.json"
    assert run("plan", path, "--out", plan_path, "-q").exit_code == 0
    out = tmp_path / "vllm"
    r = run("export", plan_path, "--format", "vllm", "--out", out)
    assert r.exit_code == 0, r.output
    scripts = [p.read_text() for p in out.rglob("*.sh")]
    assert scripts and all("--quantization fp8" in s and "--kv-cache-dtype fp8" in s for s in scripts)


def test_awq_70b_fits_one_or_two_mid_size_gpus(tmp_path):
    path = workload(tmp_path, ["L40S", "A100-80GB", "H100"], "awq", rate=2.0, tpot=100)
    plan = plan_of(path)
    assert plan["replicas"] and all(g["tp"] <= 2 and g["quantization"] == "awq" for g in plan["replicas"])
    bf16 = plan_of(workload(tmp_path, ["L40S", "A100-80GB", "H100"], "none", rate=2.0, tpot=100, name="b.json"))
    assert bf16["cost_per_hour"] > plan["cost_per_hour"]


def test_no_gpu_runs_the_precision_is_infeasible_with_the_reason(tmp_path):
    r = run("plan", workload(tmp_path, ["V100"], "fp8", model="llama-3.1-8b"), "-q")
    assert r.exit_code == 3
    assert "fp8 weights do not run on V100" in r.stderr


@pytest.mark.parametrize("key, value, field", [
    ("quantization", "int4", "models[0].quantization"),
    ("quantization", [], "models[0].quantization"),
    ("quantization", ["fp8", "nf4"], "models[0].quantization[1]"),
    ("kv_cache_dtype", "fp16", "models[0].kv_cache_dtype"),
    ("quantization", 8, "models[0].quantization"),
])
def test_bad_precision_values_exit_2_naming_the_field(tmp_path, key, value, field):
    path = tmp_path / "w.json"
    m = {"name": "llama-3.1-8b", "rate_rps": 1, "slo": {"ttft_ms": 1000, "tpot_ms": 100},
         "buckets": [{"input_tokens": 100, "output_tokens": 100, "share": 1}], key: value}
    path.write_text(json.dumps({"models": [m]}))
    out = tmp_path / "plan.json"
    r = run("plan", path, "--out", out, "-q")
    assert r.exit_code == 2
    assert field in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_share_gpus_refuses_a_precision_list(tmp_path):
    r = run("plan", workload(tmp_path, ["H100"], ["none", "fp8"], model="llama-3.1-8b"), "--share-gpus", "-q")
    assert r.exit_code == 2 and "models[0].quantization" in r.stderr


def test_a_measured_entry_sizes_only_its_own_precision(tmp_path):
    path = workload(tmp_path, ["H100"], ["none", "fp8"], model="llama-3.1-8b")
    table = tmp_path / "t.json"
    table.write_text(json.dumps({"entries": [
        {"model": "llama-3.1-8b", "gpu": "H100", "tp": 1, "input_tokens": 1000, "output_tokens": 250,
         "max_rps": 1.5, "quantization": "fp8"}]}))
    _, problem, _ = load_problem(path, table)
    assert [(c.tp, c.quantization) for c in problem.configs] == [(1, "fp8")]
    assert problem.capacity[problem.configs[0]] == {(1000, 250): 1.5}


def test_estimate_concurrency_writes_the_latency_table(tmp_path):
    path = workload(tmp_path, ["H100", "V100"], ["none", "fp8"], model="llama-3.1-70b", tp=[1, 3, 8])
    out = tmp_path / "lat.json"
    r = run("estimate", path, "--concurrency", "1,32", "--out", out)
    assert r.exit_code == 0, r.output
    entries = json.loads(out.read_text())["entries"]
    keys = {"model", "gpu", "tp", "input_tokens", "output_tokens", "concurrency", "quantization",
            "kv_cache_dtype", "ttft_ms", "tpot_ms", "output_tokens_per_s", "weights_gb_per_gpu",
            "kv_cache_tokens", "fits"}
    assert entries and all(keys <= set(e) for e in entries)
    # TP 3 does not split 64 heads, and V100 has no fp8 kernel: no entries; a note says why
    assert not any(e["tp"] == 3 for e in entries) and "note:" in r.stderr
    assert not any(e["gpu"] == "V100" and e["quantization"] == "fp8" for e in entries)
    assert any(e["gpu"] == "V100" and e["quantization"] == "none" for e in entries)
    by = {(e["gpu"], e["tp"], e["quantization"], e["concurrency"]): e for e in entries}
    assert by[("H100", 1, "none", 1)]["fits"] is False  # 141 GB of weights on 80 GB
    assert by[("H100", 1, "fp8", 1)]["fits"] is False  # 72 GB: no room for the KV cache
    one, many = by[("H100", 8, "fp8", 1)], by[("H100", 8, "fp8", 32)]
    assert one["fits"] and many["fits"]
    assert many["tpot_ms"] > one["tpot_ms"] and many["output_tokens_per_s"] > 10 * one["output_tokens_per_s"]
    assert one["weights_gb_per_gpu"] == pytest.approx(72 / 8, rel=0.05)
    # without --concurrency: today's throughput table
    r = run("estimate", path)
    doc = json.loads(r.stdout)
    assert set(doc) == {"entries", "generator"} and "max_rps" in doc["entries"][0]


def test_bad_concurrency_exits_2(tmp_path):
    r = run("estimate", "--concurrency", "0,4")
    assert r.exit_code == 2 and "--concurrency" in r.stderr


def test_profile_refuses_a_quantized_model(tmp_path):
    path = workload(tmp_path, ["H100"], "fp8", model="llama-3.1-8b")
    r = run("profile", path, "--gpu-name", "cpu-x", "--out", tmp_path / "p.json", "-q")
    assert r.exit_code == 2
    assert "torch runtime" in r.stderr and "fp8" in r.stderr
    assert not (tmp_path / "p.json").exists()


def test_deepseek_v3_at_fp8_never_plans_eight_h100_and_eight_h200_or_mi300x_serve_it(tmp_path):
    shape = CAT.model("deepseek-v3")
    assert shape.checkpoint_quant is not None and shape.checkpoint_quant.method == "fp8"
    args = dict(model="deepseek-v3", rate=1.0, tpot=100, tp=[8])
    r = run("plan", workload(tmp_path, ["H100"], **args), "-q")
    assert r.exit_code == 3 and "does not fit" in r.stderr  # 8 x 80 GB < 671 GB of FP8 weights
    for gpu in ("H200", "MI300X"):
        plan = plan_of(workload(tmp_path, [gpu], name=f"{gpu}.json", **args))
        assert {(g["gpu"], g["tp"], g["quantization"]) for g in plan["replicas"]} == {(gpu, 8, "fp8")}
    out = tmp_path / "lat.json"
    assert run("estimate", workload(tmp_path, ["H200"], name="e.json", **args), "--concurrency", "1",
               "--out", out).exit_code == 0
    (entry,) = json.loads(out.read_text())["entries"]
    assert entry["weights_gb_per_gpu"] == pytest.approx(84, rel=0.03) and entry["fits"]


def test_an_awq_config_is_planned_at_4_bits_on_one_or_two_mid_size_gpus(tmp_path):
    cfg = json.loads((DATA_DIR / "models" / "llama-3.1-70b.json").read_text())
    cfg["quantization_config"] = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
                                  "version": "gemm"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    path = workload(tmp_path, ["L40S", "A100-80GB", "H100"], model="llama-70b-awq", rate=2.0, tpot=100,
                    config="config.json")
    _, problem, _ = load_problem(path, None)
    assert {c.quantization for c in problem.configs} == {"awq"}
    lat = at_concurrency(problem_shape(path), CAT.gpu("H100"), 1, 1000, 250, 1, EFF, Precision("awq"))
    assert 35 <= lat.weights_gb_per_gpu <= 40
    plan = plan_of(path)
    assert plan["replicas"] and all(g["tp"] <= 2 and g["quantization"] == "awq" for g in plan["replicas"])
    # the workload key overrides the config: bf16 needs more GPUs per replica
    path = workload(tmp_path, ["L40S", "A100-80GB", "H100"], "none", model="llama-70b-awq", rate=2.0,
                    tpot=100, config="config.json", name="b.json")
    assert plan_of(path)["cost_per_hour"] > plan["cost_per_hour"]


def problem_shape(path):
    wl, _, _ = load_problem(path, None)
    return wl.models[0].shape


def test_a_config_quantized_in_a_format_gpumix_does_not_model_is_refused_unless_the_workload_says(tmp_path):
    cfg = json.loads((DATA_DIR / "models" / "llama-3.1-8b.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    path = workload(tmp_path, ["H100"], model="l8-bnb", config="config.json")
    r = run("plan", path, "-q")
    assert r.exit_code == 2 and "quantization_config.quant_method" in r.stderr and "bitsandbytes" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    plan = plan_of(workload(tmp_path, ["H100"], "awq", model="l8-bnb", config="config.json", name="o.json"))
    assert {g["quantization"] for g in plan["replicas"]} == {"awq"}


def test_a_gpu_outside_the_catalog_runs_fp8_when_its_spec_names_the_arch(tmp_path):
    spec = {"memory_gb": 96, "memory_bandwidth_gbps": 4000, "bf16_tflops": 900, "fp8_tflops": 1800,
            "gpus_per_node": 8}
    wl = tmp_path / "w.json"
    wl.write_text(json.dumps({"models": [{"name": "llama-3.1-70b", "rate_rps": 4, "slo": {"ttft_ms": 2000, "tpot_ms": 60},
                                          "buckets": [{"input_tokens": 1000, "output_tokens": 250, "share": 1}],
                                          "quantization": ["none", "fp8"]}],
                              "gpus": [{"name": "mine", "price_per_hour": 3.0}]}))
    for arch, want in ((None, {"none"}), ("hopper", {"fp8"})):
        eff = tmp_path / f"e-{arch}.json"
        eff.write_text(json.dumps({"gpus": {"mine": {"spec": {**spec, **({"arch": arch} if arch else {})}}}}))
        plan = plan_of(wl, "--efficiency", eff)
        assert {g["quantization"] for g in plan["replicas"]} == want
    eff.write_text(json.dumps({"gpus": {"mine": {"spec": {**spec, "arch": "pascal"}}}}))
    r = run("plan", wl, "--efficiency", eff, "-q")
    assert r.exit_code == 2 and "gpus.mine.spec.arch" in r.stderr


def test_validate_and_serve_refuse_a_precision_the_torch_runtime_cannot_run(tmp_path):
    path = workload(tmp_path, ["H100"], "fp8", model="llama-3.2-1b", rate=1.0, tpot=200)
    plan_path = tmp_path / "plan.json"
    assert run("plan", path, "--out", plan_path, "-q").exit_code == 0
    report = tmp_path / "report.json"
    r = run("validate", plan_path, path, "--gpu-name", "H100", "--report", report)
    assert r.exit_code == 2 and "replicas[0]" in r.stderr and "torch runtime" in r.stderr
    assert not report.exists()
    r = run("serve", "--model", "llama-3.2-1b", "--workload", path)
    assert r.exit_code == 2 and "models[0]" in r.stderr and "fp8" in r.stderr
