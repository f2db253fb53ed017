"""gpumix export: vLLM scripts, Kubernetes manifests and SkyPilot tasks from a plan (loose GPUs and
instance plans, spot included), every YAML parsed and its keys checked; router weights add up."""
import json
import re

import pytest
import yaml
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.planner.errors import InputError
from gpumix.planner.export import K8S_GPU_PRODUCT, export, groups_of, hf_id
from gpumix.solvers.pipeline import PlanOptions, plan_workload
from helpers import LLAMA_8B_WORKLOAD, SKYPILOT_CSV

runner = CliRunner()
CSV = SKYPILOT_CSV
WL = LLAMA_8B_WORKLOAD + """  - name: qwen2.5-14b
    rate_rps: 2
    slo: {ttft_ms: 1500, tpot_ms: 80}
    buckets: [{input_tokens: 1024, output_tokens: 256, share: 1.0}]
"""


@pytest.fixture(scope="module")
def gpu_plan():
    return plan_workload(None, None, PlanOptions(time_limit=30)).plan  # the bundled example, loose GPUs


@pytest.fixture(scope="module")
def node_plan(tmp_path_factory):
    w = tmp_path_factory.mktemp("wl") / "w.yaml"
    w.write_text(WL)
    plan = plan_workload(w, None, PlanOptions(time_limit=30, catalog=CSV, spot_share=0.5)).plan
    assert plan["nodes"] and any(n["spot"] for n in plan["nodes"])
    return plan


def parsed(files, prefix):
    return {k: yaml.safe_load(v) for k, v in files.items() if k.startswith(prefix) and k.endswith(".yaml")}


def check_router(plan, files):
    weights = json.loads(files["router-weights.json"])["models"]
    names = {g.name: g for g in groups_of(plan)}
    assert set(weights) == {g["model"] for g in plan["replicas"]}
    for model, doc in weights.items():
        for b in doc["buckets"]:
            assert sum(x["weight"] for x in b["groups"]) == pytest.approx(1.0)
            for x in b["groups"]:
                g = names[x["group"]]
                rps = next(r["rps"] for r in g.routes
                           if (r["input_tokens"], r["output_tokens"]) == (b["input_tokens"], b["output_tokens"]))
                assert x["weight"] * b["rps"] == pytest.approx(rps)


def test_k8s_manifests(gpu_plan):
    files = export(gpu_plan, ["k8s"])
    docs = parsed(files, "k8s/")
    deps = {d["metadata"]["name"]: d for d in docs.values() if d["kind"] == "Deployment"}
    svcs = {d["metadata"]["name"]: d for d in docs.values() if d["kind"] == "Service"}
    assert len(deps) == len(gpu_plan["replicas"])
    for g, grp in zip(groups_of(gpu_plan), gpu_plan["replicas"]):
        d = deps[g.name]
        assert d["apiVersion"] == "apps/v1" and d["spec"]["replicas"] == grp["count"]
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
        pod = d["spec"]["template"]["spec"]
        assert pod["nodeSelector"] == {"nvidia.com/gpu.product": K8S_GPU_PRODUCT[grp["gpu"]]}
        c = pod["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == grp["tp"]
        assert c["command"] == ["vllm", "serve"] and c["args"][0] == hf_id(grp["model"])
        assert c["args"][c["args"].index("--tensor-parallel-size") + 1] == str(grp["tp"])
        assert ("volumes" in pod) == (grp["tp"] > 1)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", g.name) and len(g.name) <= 63
    assert len(svcs) == len(gpu_plan["models"])
    for s in svcs.values():
        assert s["apiVersion"] == "v1" and s["spec"]["ports"][0]["targetPort"] == 8000
        assert any(s["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
                   for d in deps.values())
    check_router(gpu_plan, files)


def test_vllm_and_skypilot_without_nodes(gpu_plan):
    files = export(gpu_plan, ["vllm", "skypilot"])
    for g in groups_of(gpu_plan):
        sh = files[f"vllm/{g.name}.sh"]
        assert f"vllm serve {hf_id(g.model)} " in sh and f"--tensor-parallel-size {g.tp} " in sh
        task = yaml.safe_load(files[f"skypilot/{g.name}.yaml"])
        gpu = {"A100-40GB": "A100"}.get(g.gpu, g.gpu)
        assert task["resources"]["accelerators"] == f"{gpu}:{g.tp}"
        assert task["resources"]["use_spot"] is False
        assert task["service"]["replicas"] == g.count
        assert f"--tensor-parallel-size {g.tp} " in task["run"]


def test_node_plan_exports_per_node_group_with_region_and_spot(node_plan):
    files = export(node_plan, ["vllm", "k8s", "skypilot"])
    tasks = parsed(files, "skypilot/")
    assert sum(t["num_nodes"] for t in tasks.values()) == len(node_plan["nodes"])
    for t in tasks.values():
        res = t["resources"]
        assert re.fullmatch(r"[A-Za-z0-9-]+:\d+", res["accelerators"]) and res["region"]
        assert isinstance(res["use_spot"], bool) and t["run"].count("vllm serve") >= 1
    assert any(t["resources"]["use_spot"] for t in tasks.values())
    assert any("instance_type" in t["resources"] for t in tasks.values())  # AWS rows name theirs
    node_scripts = sorted(k for k in files if k.startswith("vllm/node-"))
    assert len(node_scripts) == len(node_plan["nodes"])
    for path, nd in zip(node_scripts, node_plan["nodes"]):
        assert files[path].count("vllm serve") == len(nd["replicas"])
        for r in nd["replicas"]:
            assert f"CUDA_VISIBLE_DEVICES={','.join(map(str, r['gpu_ids']))} " in files[path]
    assert any(d["metadata"]["name"].endswith("-spot") for d in parsed(files, "k8s/").values())
    check_router(node_plan, files)


def test_unknown_model_keeps_its_name_and_says_so(gpu_plan):
    plan = json.loads(json.dumps(gpu_plan))
    for g in plan["replicas"]:
        if g["model"] == "phi-3-mini":
            g["model"] = "my-classifier"
    files = export(plan, ["k8s", "vllm"])
    sh = next(v for k, v in files.items() if k.startswith("vllm/my-classifier"))
    assert "vllm serve my-classifier " in sh and "not in the model catalog" in sh
    dep = next(v for k, v in files.items() if k.startswith("k8s/my-classifier") and "deployment" in k)
    assert "not in the model catalog" in dep and yaml.safe_load(dep)["kind"] == "Deployment"


def test_bad_plans_are_input_errors():
    with pytest.raises(InputError, match="replicas"):
        export({"status": "optimal"}, ["vllm"])
    with pytest.raises(InputError, match=r"replicas\[0\].tp"):
        export({"replicas": [{"model": "m", "gpu": "L4", "tp": "2", "count": 1, "routes": []}]}, ["vllm"])


def test_cli_export_writes_every_format(tmp_path, gpu_plan):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(gpu_plan))
    r = runner.invoke(app, ["export", str(p), "--format", "all", "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    assert (out / "router-weights.json").exists()
    for sub in ("vllm", "k8s", "skypilot"):
        assert list((out / sub).iterdir())
    for f in out.rglob("*.yaml"):
        assert isinstance(yaml.safe_load(f.read_text()), dict)
    assert all(f.stat().st_mode & 0o111 for f in (out / "vllm").iterdir())
    r = runner.invoke(app, ["export", str(p), "-f", "k8s", "-o", str(tmp_path / "k")])
    assert r.exit_code == 0 and not (tmp_path / "k" / "vllm").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = runner.invoke(app, ["export", str(bad), "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "replicas" in r.output


def test_shared_sets_export_one_server_per_model_on_the_same_gpus():
    from gpumix.data import DATA_DIR
    plan = plan_workload(DATA_DIR / "examples" / "longtail.yaml",
                         options=PlanOptions(time_limit=60, share_gpus=True, baseline=False)).plan
    assert plan["shared"], "the long-tail example shares GPUs"
    files = export(plan, ["vllm", "k8s", "skypilot"])
    for i, g in enumerate(plan["shared"]):
        scripts = [t for p, t in files.items() if p.startswith(f"vllm/shared-{i}-")]
        assert len(scripts) == 1
        served = re.findall(r"--served-model-name (\S+)", scripts[0])
        assert served == [m["model"] for m in g["models"]]
        fractions = [float(x) for x in re.findall(r"--gpu-memory-utilization (\S+)", scripts[0])]
        assert len(fractions) == len(g["models"]) and 0 < sum(fractions) <= 1.0
        assert len(set(re.findall(r"--port (\d+)", scripts[0]))) == len(g["models"])
    for path, text in files.items():
        if path.endswith(".yaml"):
            doc = yaml.safe_load(text)
            assert doc, path
            if doc.get("kind") == "Deployment" and "shared" in path:
                assert doc["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 1
    weights = json.loads(files["router-weights.json"])["models"]
    shared_models = {m["model"] for g in plan["shared"] for m in g["models"]}
    assert shared_models <= set(weights)
    for model in shared_models:
        for b in weights[model]["buckets"]:
            if b["rps"] > 0:
                assert sum(x["weight"] for x in b["groups"]) == pytest.approx(1.0)
