"""SkyPilot tasks: a task per set of identical nodes of an instance plan, else a SkyServe task per
replica group or shared set. Names reach the YAML only through the emitter and sanitized notes."""
from __future__ import annotations

import json
import shlex

from gpumix.planner.export.groups import (PORT, Group, SharedGroup, dns_name, max_model_len, model_notes,
                                          node_models, shared_of, shown, vendor, vllm_args)
from gpumix.planner.export.k8s import ROCM_IMAGE, yaml_doc
from gpumix.planner.export.vllm import node_servers, shared_script

# SkyPilot's accelerator names (its catalog, `sky show-gpus -a`) where they differ from gpumix's,
# per cloud; "" is a task without a cloud (the AWS/GCP/Azure names). Lambda calls both its H100s
# H100 (gpu_1x_h100_pcie is H100:1: the instance type tells PCIe from SXM); RunPod tells SXM parts by
# an -SXM suffix, and gpumix's A100-80GB, H100 and H200 are SXM parts.
SKY_ACCELERATOR = {
    "": {"A100-40GB": "A100", "V100": "V100-32GB", "H100-PCIe": "H100"},
    "lambda": {"A100-40GB": "A100", "H100-PCIe": "H100"},
    "runpod": {"A100-40GB": "A100", "A100-80GB": "A100-80GB-SXM", "H100": "H100-SXM", "H100-PCIe": "H100",
               "H200": "H200-SXM"},
}
# bundled-catalog regions that name a cloud without regions (data/instances.json)
SKY_CLOUD_REGIONS = {"lambda": "lambda", "runpod": "runpod"}
# clouds whose bundled instance names are SkyPilot instance types (RunPod's are stand-ins)
SKY_INSTANCE_TYPES = ("lambda",)


def sky_accelerator(gpu: str, cloud: str = "") -> str:
    return SKY_ACCELERATOR.get(cloud, SKY_ACCELERATOR[""]).get(gpu, gpu)


def sky_resources(gpu: str, gpus: int, region: str, spot: bool, instance: str | None = None,
                  rocm_image: str = ROCM_IMAGE) -> dict:
    cloud = SKY_CLOUD_REGIONS.get(region, "")
    res: dict = {"accelerators": f"{sky_accelerator(gpu, cloud)}:{gpus}"}
    if cloud:
        res["cloud"] = cloud
    elif region:
        res["region"] = region
    if instance and "+" not in instance and (not cloud or cloud in SKY_INSTANCE_TYPES):
        res["instance_type"] = instance  # GCP pairs (host+GPU) and stand-in names are not instance types
    res["use_spot"] = spot
    if vendor(gpu) == "amd":  # vLLM's pip wheel is the CUDA build: run in the ROCm image instead
        res["image_id"] = f"docker:{rocm_image}"
    return res


def _setup(gpu: str) -> str:
    return "" if vendor(gpu) == "amd" else "pip install vllm"  # the ROCm image has vLLM


def skypilot_files(plan: dict, groups: list[Group], max_len: dict[str, int] | None = None,
                   rocm_image: str = ROCM_IMAGE, policies: dict[str, dict] | None = None) -> dict[str, str]:
    """Instance plans: a task per set of identical nodes (num_nodes, each node runs its replicas and
    shared sets). Plans without nodes: a task per replica group, with a SkyServe `service` section
    for its count."""
    max_len = max_model_len(groups) if max_len is None else max_len
    files = {}
    nodes = plan.get("nodes") or []
    if nodes:
        shared = shared_of(plan)
        sets: dict[str, list] = {}
        for nd in nodes:
            sig = json.dumps([nd["instance"], nd.get("region"), bool(nd.get("spot")),
                              sorted((r["model"], r["tp"], tuple(r["gpu_ids"])) for r in nd["replicas"]),
                              sorted((r["group"], tuple(r["gpu_ids"])) for r in nd.get("shared") or ())])
            sets.setdefault(sig, []).append(nd)
        for i, same in enumerate(sets.values()):
            nd = same[0]
            run = [cmd + " &" for cmd in node_servers(nd, shared, max_len)]
            name = dns_name(f"gpumix-{i:02d}-{nd['instance']}" + ("-spot" if nd.get("spot") else ""))
            serving = [f"{shown(r['model'])} TP{r['tp']}" for r in nd["replicas"]] + \
                [f"shared set #{r['group']} ({', '.join(shown(m) for m in r['models'])}) TP{r['tp']}"
                 for r in nd.get("shared") or ()]
            files[f"skypilot/{name}.yaml"] = yaml_doc({
                "name": name,
                "num_nodes": len(same),
                "resources": sky_resources(nd["gpu"], nd["gpus"], nd.get("region"), bool(nd.get("spot")), nd["instance"],
                                           rocm_image),
                "setup": _setup(nd["gpu"]),
                "run": "\n".join(run + ["wait"]) + "\n",
            }, [f"sky launch -c {name} {name}.yaml: {len(same)} x {shown(nd['instance'])}, each serving "
                + ", ".join(serving), *model_notes(node_models(nd))])
        return files
    for g in groups:
        cmd = shlex.join(["vllm", "serve", *vllm_args(g.model, g.tp, PORT, max_len.get(g.model), g.quantization,
                                                       g.kv_cache_dtype)])
        policy = (policies or {}).get(g.name)
        service = ({"readiness_probe": "/health", "replica_policy": policy} if policy
                   else {"readiness_probe": "/health", "replicas": g.count})
        what = (f"between {policy['min_replicas']} and {policy['max_replicas']} replicas by load" if policy
                else f"{g.count} replica{'s' if g.count != 1 else ''}")
        files[f"skypilot/{g.name}.yaml"] = yaml_doc({
            "name": g.name,
            "resources": {**sky_resources(g.gpu, g.tp, "", g.spot, rocm_image=rocm_image), "ports": PORT},
            "service": service,
            "setup": _setup(g.gpu),
            "run": cmd + "\n",
        }, [f"sky serve up {g.name}.yaml starts {what}; sky launch starts one", *model_notes([g.model])])
    return files


def skypilot_shared_files(shared: list[SharedGroup], max_len: dict[str, int],
                          rocm_image: str = ROCM_IMAGE) -> dict[str, str]:
    """A shared set is one SkyServe task running its script. It opens a port per model; SkyServe then
    needs `service.ports`, the port its load balancer sends to (the first model's)."""
    files = {}
    for g in shared:
        script = shared_script(g, max_len)
        ports = [g.port(m) for m, _, _ in g.members]
        files[f"skypilot/{g.name}.yaml"] = yaml_doc({
            "name": g.name,
            "resources": {**sky_resources(g.gpu, g.tp, "", False, rocm_image=rocm_image), "ports": ports},
            "service": {"readiness_probe": "/health", "replicas": g.count, "ports": ports[0]},
            "setup": _setup(g.gpu),
            "run": script.split("\n", 1)[1],
        }, [f"sky serve up {g.name}.yaml: shared set of {', '.join(shown(m) for m, _, _ in g.members)}; "
            f"SkyServe routes to {shown(g.members[0][0])} (port {ports[0]}), the other models on ports "
            f"{', '.join(map(str, ports[1:])) or '-'} of each replica"])
    return files
