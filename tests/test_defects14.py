"""Regression tests for the defects of issue 14 found trying gpumix as a new user would."""
import json

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR

runner = CliRunner()


# ---- a per-GPU-type cap together with instances

CAPPED = """
models:
  - name: llama8b
    config: {config}
    rate_rps: {rate}
    slo: {{ttft_ms: 2000, tpot_ms: 100}}
    buckets: [{{input_tokens: 512, output_tokens: 128, share: 1.0}}]
gpus: [{{name: L4, available: 12}}, {{name: A100-80GB}}]
instances:
  - {{name: l4x1-a, gpu: L4, gpus: 1, price_per_hour: 0.80, region: r1}}
  - {{name: l4x4-a, gpu: L4, gpus: 4, price_per_hour: 3.00, region: r1}}
  - {{name: l4x1-b, gpu: L4, gpus: 1, price_per_hour: 0.70, region: r2}}
  - {{name: l4x4-b, gpu: L4, gpus: 4, price_per_hour: 2.90, region: r2}}
  - {{name: a100x8, gpu: A100-80GB, gpus: 8, price_per_hour: 40.0, region: r1}}
"""


@pytest.mark.parametrize("rate", [40, 100])
def test_gpu_type_cap_with_instances_is_honoured(tmp_path, rate):
    """It used to fail the checker (C3 L4: plan uses 18 GPUs, 12 available): stage 2 and the node
    search ignored the cap of the workload's `gpus` and reported a cost below their own bound."""
    w = tmp_path / "w.yaml"
    w.write_text(CAPPED.format(config=DATA_DIR / "models" / "llama-3.1-8b.json", rate=rate))
    r = runner.invoke(app, ["plan", str(w), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    rented = sum(nd["gpus"] if "gpus" in nd else 0 for nd in plan["nodes"] if nd["gpu"] == "L4")
    assert rented <= 12
    assert plan["cost_per_hour"] >= plan["lower_bound_per_hour"] - 1e-9


def test_gpu_type_cap_with_instances_holds_when_sharing(tmp_path):
    w = tmp_path / "w.yaml"
    w.write_text(CAPPED.format(config=DATA_DIR / "models" / "llama-3.1-8b.json", rate=40))
    r = runner.invoke(app, ["plan", str(w), "--format", "json", "-q", "--share-gpus"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert sum(nd["gpus"] for nd in plan["nodes"] if nd["gpu"] == "L4") <= 12


def test_gpu_type_cap_counts_the_gpus_of_rented_nodes(tmp_path):
    """3 L4 allowed and only 4-GPU L4 nodes: no node can be rented (exit 3, the cap named)."""
    w = tmp_path / "w.yaml"
    w.write_text(CAPPED.format(config=DATA_DIR / "models" / "llama-3.1-8b.json", rate=2)
                 .replace("available: 12}, {name: A100-80GB}]", "available: 3}]")
                 .replace("  - {name: l4x1-a, gpu: L4, gpus: 1, price_per_hour: 0.80, region: r1}\n", "")
                 .replace("  - {name: l4x1-b, gpu: L4, gpus: 1, price_per_hour: 0.70, region: r2}\n", ""))
    r = runner.invoke(app, ["plan", str(w), "-q"])
    assert r.exit_code == 3, r.output
    assert "3 L4" in r.output


# ---- throughput-table entries that size nothing are named; Hugging Face ids match through aliases

ONE_MODEL = """
models:
  - name: llama-3.1-8b
    rate_rps: 5
    slo: {ttft_ms: 1000, tpot_ms: 60}
    buckets: [{input_tokens: 512, output_tokens: 256, share: 1.0}]
gpus: [{name: A10G, price_per_hour: 1.006}, {name: L40S, price_per_hour: 1.861}]
"""


def _entries(*rows):
    return {"entries": [{"model": m, "gpu": g, "tp": 1, "input_tokens": i, "output_tokens": 256, "max_rps": r}
                        for m, g, i, r in rows]}


def test_unused_profile_entries_are_named(tmp_path):
    w, p = tmp_path / "w.yaml", tmp_path / "p.json"
    w.write_text(ONE_MODEL)
    p.write_text(json.dumps(_entries(("llama-3.1-8b", "A10G", 512, 2.0), ("llama-3.1-8b", "A10G", 999, 2.0),
                                     ("other", "L40S", 512, 4.2))))
    r = runner.invoke(app, ["plan", str(w), "--profiles", str(p), "--fill-estimates", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "2 throughput-table entries" in r.output and "went unused" in r.output
    assert "other on L40S" in r.output and "999/256" in r.output


def test_hugging_face_id_entries_size_the_catalog_model(tmp_path):
    from gpumix.planner.capacity import build_problem
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.profiles import ProfileEntry
    from gpumix.planner.workload import load_workload

    cat = load_catalog()
    (tmp_path / "w.yaml").write_text(ONE_MODEL)
    wl = load_workload(tmp_path / "w.yaml", cat)
    e = ProfileEntry("meta-llama/Llama-3.1-8B-Instruct", "A10G", 1, 512, 256, 2.0)
    problem, report = build_problem(wl, cat, (e,))
    assert [c.gpu for c in problem.configs] == ["A10G"]
    assert not report.notes


# ---- profile import-vllm: failed requests, --append-result files, Hugging Face ids, bad numbers

def _vllm(rate, rps, failed=0, completed=100, model_id="meta-llama/Llama-3.1-8B-Instruct"):
    return {"model_id": model_id, "request_rate": rate, "completed": completed, "failed": failed,
            "total_input_tokens": 100 * 512, "total_output_tokens": 100 * 128, "request_throughput": rps,
            "p99_ttft_ms": 300, "p99_tpot_ms": 30}


def test_import_vllm_reads_append_result_files_and_maps_hf_ids(tmp_path):
    runs = tmp_path / "runs.jsonl"
    runs.write_text("".join(json.dumps(_vllm(r, r * 0.95)) + "\n" for r in (1, 2, 4)))
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["profile", "import-vllm", str(runs), "--gpu", "H100", "--out", str(out)])
    assert r.exit_code == 0, r.output
    (e,) = json.loads(out.read_text())["entries"]
    assert (e["model"], e["runs"], e["max_rps"]) == ("llama-3.1-8b", 3, 3.8)  # a catalog name: it plans


def test_import_vllm_leaves_out_runs_with_failed_requests(tmp_path):
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(_vllm(2, 1.9)))
    bad.write_text(json.dumps(_vllm(8, 7.0, failed=5)))
    out = tmp_path / "p.json"
    r = runner.invoke(app, ["profile", "import-vllm", str(good), str(bad), "--gpu", "H100", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "5 of 105 requests failed" in r.output
    assert json.loads(out.read_text())["entries"][0]["max_rps"] == 1.9
    r = runner.invoke(app, ["profile", "import-vllm", str(bad), "--gpu", "H100", "--out", str(tmp_path / "q.json")])
    assert r.exit_code == 2 and "failed" in r.output and not (tmp_path / "q.json").exists()


@pytest.mark.parametrize("field, value", [("completed", 0.5), ("completed", -3), ("failed", 1.5),
                                          ("total_input_tokens", 10**30), ("request_throughput", -1.0)])
def test_import_vllm_bad_numbers_name_file_and_field(tmp_path, field, value):
    f = tmp_path / "r.json"
    f.write_text(json.dumps({**_vllm(2, 1.9), field: value}))
    out = tmp_path / "p.json"
    out.write_text('{"entries": []}\n')
    r = runner.invoke(app, ["profile", "import-vllm", str(f), "--gpu", "H100", "--out", str(out)])
    assert r.exit_code == 2, r.output
    assert "r.json" in r.output and field in r.output and len(r.output.strip().splitlines()) == 1
    assert out.read_text() == '{"entries": []}\n'


def test_import_vllm_non_finite_field(tmp_path):
    f = tmp_path / "r.json"
    f.write_text(json.dumps(_vllm(2, 1.9)).replace('"p99_ttft_ms": 300', '"p99_ttft_ms": Infinity'))
    r = runner.invoke(app, ["profile", "import-vllm", str(f), "--gpu", "H100", "--out", str(tmp_path / "p.json")])
    assert r.exit_code == 2 and "p99_ttft_ms" in r.output


# ---- profile endpoint against a server that is not there

def test_profile_endpoint_unreachable_names_it_and_keeps_the_table(tmp_path):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    w = tmp_path / "w.yaml"
    w.write_text(ONE_MODEL)
    out = tmp_path / "p.json"
    good = json.dumps(_entries(("llama-3.1-8b", "A10G", 512, 2.0))) + "\n"
    out.write_text(good)
    r = runner.invoke(app, ["profile", "endpoint", str(w), "--endpoint", f"http://127.0.0.1:{port}",
                            "--gpu-name", "A10G", "--out", str(out), "--duration", "0.5", "-q"])
    assert r.exit_code == 2, r.output
    assert f"127.0.0.1:{port}" in r.output and "refused" in r.output.lower()
    assert len(r.output.strip().splitlines()) == 1
    assert out.read_text() == good


def test_rate_search_with_no_answer_is_an_error():
    from gpumix.planner.errors import InputError
    from gpumix.profiler.measure import endpoint

    class Down:
        async def send(self, arrival, record):
            raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(InputError, match="no request answered"):
        endpoint.search_bucket(Down(), 16, 4, 1000, 100, endpoint.SearchOptions(duration_s=0.5, drain_s=0.1))


# ---- the runtime keeps the config's RoPE base and norm epsilon

def test_model_args_from_a_shape_keep_rope_theta_and_rms_norm_eps(tmp_path):
    pytest.importorskip("torch")
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.shapes import load_config_file
    from gpumix.profiler.runtime.model import ModelArgs

    qwen = ModelArgs.from_shape(load_catalog().model("qwen2.5-7b"))
    assert (qwen.rope_theta, qwen.norm_eps) == (1e6, 1e-6)
    cfg = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
           "num_hidden_layers": 2, "vocab_size": 128, "rope_theta": 250000.0, "rms_norm_eps": 1e-6}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    args = ModelArgs.from_shape(load_config_file(path, "tiny", "config", "w.yaml")).scaled(layers=1)
    assert (args.rope_theta, args.norm_eps) == (250000.0, 1e-6)
    assert ModelArgs.from_config(cfg).rope_theta == 250000.0
    path.write_text(json.dumps({**cfg, "rope_theta": None, "rms_norm_eps": -1}))  # unusable: the defaults
    args = ModelArgs.from_shape(load_config_file(path, "tiny", "config", "w.yaml"))
    assert (args.rope_theta, args.norm_eps) == (10000.0, 1e-5)


# ---- memory is checked before a model is built (--memory-budget)

BIG = """
models:
  - name: llama-3.1-70b
    rate_rps: 1
    slo: {ttft_ms: 2000, tpot_ms: 100}
    buckets: [{input_tokens: 512, output_tokens: 128, share: 1.0}]
"""


def test_footprint_counts_what_build_allocates():
    pytest.importorskip("torch")
    import torch

    from gpumix.profiler.runtime.memory import footprint
    from gpumix.profiler.runtime.model import ModelArgs, build, weight_bytes

    for a in (ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, intermediate=128, vocab=128),
              ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, intermediate=128, vocab=128,
                        n_experts=4, top_k=2, tie_embeddings=True)):
        m = build(a, dtype=torch.bfloat16)
        assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
        m.setup_cache(3, 40)
        kv = sum(layer.attention.cache.k.nbytes + layer.attention.cache.v.nbytes for layer in m.layers)
        fp = footprint(a.to_dict(), "bf16", 3, 40)
        assert fp.weights == weight_bytes(m) and fp.kv == kv


def test_profile_refuses_a_model_larger_than_the_budget(tmp_path):
    w, out = tmp_path / "w.yaml", tmp_path / "p.json"
    w.write_text(BIG)
    r = runner.invoke(app, ["profile", str(w), "--out", str(out), "--memory-budget", "4", "-q"])
    assert r.exit_code == 2, r.output
    assert "--memory-budget" in r.output and "llama-3.1-70b" in r.output and "141.1 GB" in r.output
    assert len(r.output.strip().splitlines()) == 1 and not out.exists()


def test_validate_refuses_replicas_larger_than_the_budget(tmp_path):
    w, plan, report = tmp_path / "w.yaml", tmp_path / "plan.json", tmp_path / "report.json"
    w.write_text(ONE_MODEL.replace("gpus: [{name: A10G, price_per_hour: 1.006}, ", "gpus: ["))
    assert runner.invoke(app, ["plan", str(w), "-q", "-o", str(plan)]).exit_code == 0
    r = runner.invoke(app, ["validate", str(plan), "--gpu-name", "L40S", "--memory-budget", "2",
                            "--report", str(report), "-q"])
    assert r.exit_code == 2, r.output
    assert "--memory-budget" in r.output and "llama-3.1-8b on L40S TP1" in r.output
    assert not report.exists()


def test_serve_refuses_a_model_larger_than_the_budget():
    r = runner.invoke(app, ["serve", "--model", "llama-3.1-8b", "--memory-budget", "1", "--port", "0"])
    assert r.exit_code == 2, r.output
    assert "--memory-budget" in r.output and "16.1 GB at bf16" in r.output


def test_memory_budget_per_device_on_cuda_and_shared_on_cpu():
    from gpumix.planner.errors import InputError
    from gpumix.profiler.runtime.memory import GB, OVERHEAD, Footprint, refuse_if_too_large

    ten = Footprint(weights=10 * GB / (1 + OVERHEAD), kv=0.0, tp=1, n_slots=1, max_seq=1, dtype="bf16")
    refuse_if_too_large("cmd", "m", [ten, ten], "cuda", 15)  # two replicas, two devices
    with pytest.raises(InputError, match="--memory-budget"):
        refuse_if_too_large("cmd", "m", [ten, ten], "cuda", 15, same_device=True)
    with pytest.raises(InputError, match="2 replicas of m needs about 20.0 GB"):
        refuse_if_too_large("cmd", "m", [ten, ten], "cpu", 15)
    tp2 = Footprint(weights=10 * GB / (1 + OVERHEAD), kv=0.0, tp=2, n_slots=1, max_seq=1, dtype="bf16")
    with pytest.raises(InputError, match="20.0 GB"):  # CPU ranks each build the full model
        refuse_if_too_large("cmd", "m", [tp2], "cpu", 15)


def test_the_plan_says_where_each_gpus_price_comes_from(tmp_path):
    w = tmp_path / "w.yaml"
    w.write_text("models:\n  - name: llama-3.1-8b\n    rate_rps: 4\n    slo: {ttft_ms: 2000, tpot_ms: 100}\n"
                 "    buckets: [{input_tokens: 512, output_tokens: 128, share: 1}]\n"
                 "gpus: [{name: L4, price_per_hour: 0.5}, {name: H100}]\n")
    r = runner.invoke(app, ["plan", str(w), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    from gpumix.solvers.pipeline import load_problem
    _, problem, _ = load_problem(w, None)
    assert problem.price_source["L4"] == "workload: gpus[0].price_per_hour"
    assert problem.price_source["H100"].startswith("catalog (data/gpus.json, 2026-11-09")
    assert "p5.48xlarge" in problem.price_source["H100"] and problem.price["H100"] == 6.88
    plan = json.loads(r.stdout)
    assert all(g["price_source"] == problem.price_source[g["name"]] for g in plan["gpus"])
    r = runner.invoke(app, ["plan", str(w), "-q"])
    assert "prices: " in r.stdout
