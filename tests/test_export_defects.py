"""Regression tests for export defects (issue 14): SkyServe tasks of shared sets name their service
port, SkyPilot accelerator names per cloud, k8s spot groups on spot nodes, AMD groups on ROCm,
and churn `stop` entries name their node."""
import pytest
import yaml

from gpumix.planner.export import ROCM_IMAGE, SPOT_LABEL, export
from gpumix.planner.export.skypilot import sky_accelerator, sky_resources
from gpumix.planner.instances import InstanceType
from gpumix.planner.problem import Config
from gpumix.solvers.stage2.churn import diff_nodes
from gpumix.solvers.stage2.packing import CurrentNode, Node, Placed

ROUTES = [{"input_tokens": 512, "output_tokens": 128, "rps": 1.0}]


def docs(files, prefix):
    return {p: yaml.safe_load(t) for p, t in files.items() if p.startswith(prefix) and p.endswith(".yaml")}


def skyserve_ports(task: dict) -> str:
    """The replica port SkyServe would use, by its rule (sky/serve/serve_utils.py, validate_service_task):
    service.ports when set, else the one port the resources open; several ports without service.ports
    is an error."""
    if task["service"].get("ports") is not None:
        assert isinstance(task["service"]["ports"], int) and 1 <= task["service"]["ports"] <= 65535
        return str(task["service"]["ports"])
    ports = task["resources"]["ports"]
    ports = ports if isinstance(ports, list) else [ports]
    if len(ports) != 1:
        raise ValueError("To open multiple ports on the replica, please set the `service.ports` field")
    return str(ports[0])


def test_shared_set_skyserve_task_names_its_service_port():
    plan = {"replicas": [], "shared": [{"gpu": "L4", "tp": 1, "count": 2, "models": [
        {"model": "llama-3.1-8b", "memory_gb_per_gpu": 8.0, "routes": ROUTES},
        {"model": "phi-3-mini", "memory_gb_per_gpu": 6.0, "routes": ROUTES}]}]}
    task = next(iter(docs(export(plan, ["skypilot"]), "skypilot/").values()))
    assert task["resources"]["ports"] == [8000, 8001]
    assert skyserve_ports(task) == "8000"
    assert "--port 8000" in task["run"]  # the port SkyServe routes to is served


def test_dedicated_skyserve_tasks_still_validate():
    plan = {"replicas": [{"model": "llama-3.1-8b", "gpu": "L4", "tp": 1, "count": 2, "routes": ROUTES}]}
    for task in docs(export(plan, ["skypilot"]), "skypilot/").values():
        assert skyserve_ports(task) == "8000"


@pytest.mark.parametrize("gpu, cloud, name", [
    ("H100-PCIe", "lambda", "H100"),  # Lambda's catalog: gpu_1x_h100_pcie is H100:1
    ("H100", "lambda", "H100"),
    ("A100-40GB", "lambda", "A100"),
    ("A100-80GB", "lambda", "A100-80GB"),
    ("A100-80GB", "runpod", "A100-80GB-SXM"),
    ("H200", "runpod", "H200-SXM"),
    ("H100-PCIe", "", "H100"),
    ("A100-40GB", "", "A100"),
    ("L4", "", "L4"),
])
def test_skypilot_accelerator_names_per_cloud(gpu, cloud, name):
    assert sky_accelerator(gpu, cloud) == name


def test_lambda_h100_pcie_node_task_pins_the_pcie_instance():
    res = sky_resources("H100-PCIe", 1, "lambda", False, "gpu_1x_h100_pcie")
    assert res == {"accelerators": "H100:1", "cloud": "lambda", "instance_type": "gpu_1x_h100_pcie",
                   "use_spot": False}
    assert "instance_type" not in sky_resources("L4", 1, "runpod", False, "runpod-1x-l4")  # stand-in names


def test_no_exported_accelerator_is_h100_pcie():
    plan = {"replicas": [{"model": "llama-3.1-8b", "gpu": "H100-PCIe", "tp": 1, "count": 1, "routes": ROUTES}],
            "nodes": [{"instance": "gpu_1x_h100_pcie", "region": "lambda", "gpu": "H100-PCIe", "gpus": 1,
                       "spot": False, "price_per_hour": 2.49,
                       "replicas": [{"model": "llama-3.1-8b", "tp": 1, "gpu_ids": [0]}]}]}
    for task in docs(export(plan, ["skypilot"]), "skypilot/").values():
        assert task["resources"]["accelerators"] == "H100:1" and task["resources"]["cloud"] == "lambda"


def test_k8s_spot_groups_select_and_tolerate_spot_nodes():
    plan = {"replicas": [{"model": "llama-3.1-8b", "gpu": "L4", "tp": 1, "count": 1, "routes": ROUTES, "spot": s}
                         for s in (True, False)]}
    deps = {d["metadata"]["name"]: d for d in docs(export(plan, ["k8s"]), "k8s/").values() if d["kind"] == "Deployment"}
    key, value = SPOT_LABEL
    spot = deps["llama-3-1-8b-l4-tp1-spot"]["spec"]["template"]["spec"]
    assert spot["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-L4", key: value}
    assert spot["tolerations"] == [{"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}]
    ondemand = deps["llama-3-1-8b-l4-tp1"]["spec"]["template"]["spec"]
    assert key not in ondemand["nodeSelector"] and "tolerations" not in ondemand


def test_mi300x_groups_run_rocm_with_amd_gpus():
    plan = {"replicas": [{"model": "llama-3.1-70b", "gpu": "MI300X", "tp": 2, "count": 1, "routes": ROUTES},
                         {"model": "llama-3.1-8b", "gpu": "L4", "tp": 1, "count": 1, "routes": ROUTES}],
            "shared": [{"gpu": "MI300X", "tp": 1, "count": 1, "models": [
                {"model": "phi-3-mini", "memory_gb_per_gpu": 8.0, "routes": ROUTES},
                {"model": "qwen2.5-14b", "memory_gb_per_gpu": 40.0, "routes": ROUTES}]}]}
    files = export(plan, ["k8s", "skypilot"])
    for path, d in docs(files, "k8s/").items():
        if d["kind"] != "Deployment":
            continue
        c = d["spec"]["template"]["spec"]["containers"][0]
        if "l4" in path:
            assert c["image"] == "vllm/vllm-openai:latest" and "nvidia.com/gpu" in c["resources"]["limits"]
        else:
            assert c["image"] == ROCM_IMAGE and "nvidia.com/gpu" not in c["resources"]["limits"], path
            assert c["resources"]["limits"]["amd.com/gpu"] >= 1
    for path, t in docs(files, "skypilot/").items():
        amd = "mi300x" in path
        assert (t["resources"].get("image_id") == f"docker:{ROCM_IMAGE}") == amd, path
        assert ("pip install vllm" in t["setup"]) != amd


def test_rocm_image_option_reaches_k8s_and_skypilot():
    plan = {"replicas": [{"model": "llama-3.1-70b", "gpu": "MI300X", "tp": 2, "count": 1, "routes": ROUTES}]}
    files = export(plan, ["k8s", "skypilot"], rocm_image="rocm/vllm:pinned")
    dep = next(d for d in docs(files, "k8s/").values() if d["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "rocm/vllm:pinned"
    task = next(iter(docs(files, "skypilot/").values()))
    assert task["resources"]["image_id"] == "docker:rocm/vllm:pinned"


def test_churn_stop_entries_name_the_current_node():
    l4 = InstanceType("g6.xlarge", "L4", 1, 0.8, "us-east-1")
    a = Placed(Config("llama-3.1-8b", "L4", 1), (0,))
    b = Placed(Config("phi-3-mini", "L4", 1), (0,))
    current = (CurrentNode(l4, False, (a,)), CurrentNode(l4, False, (b,)))
    new = (Node(l4, False, (b,), origin=1), Node(l4, False, (a,), origin=None))
    changes = diff_nodes(current, new)
    assert [e["node"] for e in changes["stop"]] == [0]  # llama left current node 0
    assert [e["node"] for e in changes["start"]] == [1] and [e["node"] for e in changes["keep"]] == [0]
    assert all(e["node"] is not None for v in changes.values() for e in v)
    import io

    from rich.console import Console

    from gpumix.cli import render
    buf = io.StringIO()
    render.changes(Console(file=buf, width=200), {"changes": changes})
    assert "on node None" not in buf.getvalue() and "on node 0 g6.xlarge" in buf.getvalue()


def test_skypilot_itself_accepts_the_shared_set_task(tmp_path):
    """Where SkyPilot is installed (not a gpumix dependency): its own parser and validate_service_task."""
    sky = pytest.importorskip("sky")
    import inspect

    from sky.serve import serve_utils
    plan = {"replicas": [], "shared": [{"gpu": "L4", "tp": 1, "count": 2, "models": [
        {"model": "llama-3.1-8b", "memory_gb_per_gpu": 8.0, "routes": ROUTES},
        {"model": "phi-3-mini", "memory_gb_per_gpu": 6.0, "routes": ROUTES}]}]}
    for path, text in export(plan, ["skypilot"]).items():
        if not path.endswith(".yaml"):
            continue
        f = tmp_path / path.replace("/", "_")
        f.write_text(text)
        task = sky.Task.from_yaml(str(f))
        if "pool" in inspect.signature(serve_utils.validate_service_task).parameters:
            serve_utils.validate_service_task(task, pool=False)
        else:
            serve_utils.validate_service_task(task)
