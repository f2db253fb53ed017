"""Kubernetes manifests: a Deployment per replica group or shared set, a Service per model.

Everything goes through the YAML emitter; comment lines are built by yaml_doc from notes it
sanitizes (groups.comment), so no name can start a line of its own.
"""
from __future__ import annotations

import yaml

from gpumix.planner.export.groups import (PORT, Group, SharedGroup, comment, dns_name, max_model_len, model_notes,
                                          shown, vendor, vllm_args)
from gpumix.planner.export.vllm import shared_script

DEFAULT_IMAGE = "vllm/vllm-openai:latest"
# vLLM built for ROCm (docs.vllm.ai, AMD ROCm installation: prebuilt images on Docker Hub); pin a tag
ROCM_IMAGE = "rocm/vllm:latest"
# Spot groups' node label; the Deployment selects it and tolerates a NoSchedule taint of the same
# key and value. GKE labels and taints spot nodes so; on EKS use eks.amazonaws.com/capacityType=SPOT,
# with Karpenter karpenter.sh/capacity-type=spot (`gpumix export --spot-label KEY=VALUE`).
SPOT_LABEL = ("cloud.google.com/gke-spot", "true")

# nvidia.com/gpu.product node labels set by NVIDIA GPU Feature Discovery (the product name nvidia-smi
# reports, spaces as dashes). Check yours: kubectl get nodes -L nvidia.com/gpu.product
K8S_GPU_PRODUCT = {
    "B200": "NVIDIA-B200",
    "H200": "NVIDIA-H200",
    "H100": "NVIDIA-H100-80GB-HBM3",
    "H100-PCIe": "NVIDIA-H100-PCIe",
    "A100-80GB": "NVIDIA-A100-SXM4-80GB",
    "A100-40GB": "NVIDIA-A100-SXM4-40GB",
    "L40S": "NVIDIA-L40S",
    "L40": "NVIDIA-L40",
    "A10G": "NVIDIA-A10G",
    "L4": "NVIDIA-L4",
    "T4": "Tesla-T4",
    "V100": "Tesla-V100-SXM2-32GB",
}


class _Dumper(yaml.SafeDumper):
    """No &anchors for shared dicts (kubectl reads them, people stumble); multi-line strings as |."""

    def ignore_aliases(self, data):
        return True


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                            style="|" if "\n" in s else None))


def yaml_doc(doc: dict, notes: list[str] = ()) -> str:
    """The document through the emitter, after one `#` line per note (sanitized: groups.comment)."""
    return "".join(comment(n) for n in notes) + yaml.dump(doc, Dumper=_Dumper, sort_keys=False,
                                                          default_flow_style=False, width=120)


def gpu_placement(gpu: str, count: int, image: str, rocm_image: str) -> tuple[str, dict, dict, list[str]]:
    """(image, resources limits, nodeSelector, notes) for `count` GPUs of a type: AMD GPUs get the
    ROCm image and amd.com/gpu (AMD's device plugin), NVIDIA ones nvidia.com/gpu and GFD's product label."""
    product = K8S_GPU_PRODUCT.get(gpu)
    selector = {"nvidia.com/gpu.product": product} if product else {"gpumix/gpu": dns_name(gpu)}
    notes = [] if product else [f"{shown(gpu)}: no known node label; label its nodes gpumix/gpu={dns_name(gpu)}"]
    if vendor(gpu) == "amd":
        return rocm_image, {"amd.com/gpu": count}, selector, notes
    return image, {"nvidia.com/gpu": count}, selector, notes


def spot_pod(pod: dict, spot_label: tuple[str, str]) -> None:
    """Pin a pod to spot nodes: select their label, tolerate their taint."""
    key, value = spot_label
    pod["nodeSelector"][key] = value
    pod["tolerations"] = [{"key": key, "operator": "Equal", "value": value, "effect": "NoSchedule"}]


def k8s_files(groups: list[Group], image: str = DEFAULT_IMAGE, rocm_image: str = ROCM_IMAGE,
              spot_label: tuple[str, str] = SPOT_LABEL) -> dict[str, str]:
    """A Deployment per replica group (replicas = count, TP GPUs each, pinned to the GPU type, spot
    groups to spot nodes) and a Service per model selecting all its groups' pods."""
    max_len = max_model_len(groups)
    files = {}
    for g in groups:
        labels = {"app.kubernetes.io/part-of": "gpumix", "gpumix/model": dns_name(g.model), "gpumix/group": g.name}
        img, limits, selector, notes = gpu_placement(g.gpu, g.tp, image, rocm_image)
        notes = model_notes([g.model]) + notes
        container = {
            "name": "vllm",
            "image": img,
            "command": ["vllm", "serve"],
            "args": vllm_args(g.model, g.tp, PORT, max_len.get(g.model), g.quantization, g.kv_cache_dtype),
            "ports": [{"name": "http", "containerPort": PORT}],
            "resources": {"limits": limits},
            "readinessProbe": {"httpGet": {"path": "/health", "port": PORT}, "periodSeconds": 10},
        }
        pod = {"nodeSelector": selector, "containers": [container]}
        if g.spot:
            spot_pod(pod, spot_label)
            notes.append(f"spot group: runs on nodes labelled {spot_label[0]}={spot_label[1]} (and tolerates "
                         f"that NoSchedule taint)")
        if g.tp > 1:  # NCCL between the TP ranks needs more shared memory than the 64 MiB default
            container["volumeMounts"] = [{"name": "shm", "mountPath": "/dev/shm"}]
            pod["volumes"] = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
        files[f"k8s/{g.name}-deployment.yaml"] = yaml_doc({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": g.name, "labels": labels},
            "spec": {
                "replicas": g.count,
                "selector": {"matchLabels": {"gpumix/group": g.name}},
                "template": {"metadata": {"labels": labels}, "spec": pod},
            },
        }, notes)
    for model in sorted({g.model for g in groups}):
        name = dns_name(model)
        files[f"k8s/{name}-service.yaml"] = yaml_doc({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpumix", "gpumix/model": name}},
            "spec": {"selector": {"gpumix/model": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": PORT}]},
        }, ["spreads requests evenly over the model's pods; router-weights.json has the planned split"])
    return files


def k8s_shared_files(shared: list[SharedGroup], max_len: dict[str, int], image: str = DEFAULT_IMAGE,
                     rocm_image: str = ROCM_IMAGE) -> dict[str, str]:
    """A shared set runs its script in one container (a GPU cannot be split between containers),
    with a Service per model and port."""
    files = {}
    for g in shared:
        script = shared_script(g, max_len)
        ports = [g.port(m) for m, _, _ in g.members]
        labels = {"app.kubernetes.io/part-of": "gpumix", "gpumix/group": g.name}
        img, limits, selector, notes = gpu_placement(g.gpu, g.tp, image, rocm_image)
        container = {"name": "vllm", "image": img, "command": ["sh", "-c", script],
                     "ports": [{"name": f"http-{j}", "containerPort": p} for j, p in enumerate(ports)],
                     "resources": {"limits": limits}}
        files[f"k8s/{g.name}-deployment.yaml"] = yaml_doc({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": g.name, "labels": labels},
            "spec": {"replicas": g.count, "selector": {"matchLabels": {"gpumix/group": g.name}},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "nodeSelector": selector,
                         "containers": [container]}}},
        }, [f"shared set: {', '.join(shown(m) for m, _, _ in g.members)}", *notes])
        for model, _, _ in g.members:
            name = dns_name(f"{model}-{g.name}")
            files[f"k8s/{name}-service.yaml"] = yaml_doc({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpumix",
                                                      "gpumix/model": dns_name(model)}},
                "spec": {"selector": {"gpumix/group": g.name},
                         "ports": [{"name": "http", "port": 80, "targetPort": g.port(model)}]},
            }, [f"{shown(model)} on the shared set {g.name}"])
    return files


# KEDA (keda.sh, a CNCF graduated project) scales a Deployment by triggers; its cron scaler holds
# `desiredReplicas` between a `start` and an `end` cron time in a time zone, and the ScaledObject falls
# back to minReplicaCount outside every trigger. The cluster follows the schedule by itself, from
# declarative objects, with no job of gpumix's running (docs/schedule.md).
KEDA_API = "keda.sh/v1alpha1"


def keda_scaled_object(name: str, counts: tuple[int, ...], crons: list[tuple[str, str]], timezone: str) -> str:
    """A ScaledObject for the Deployment `name`: minReplicaCount the fewest replicas of any period,
    maxReplicaCount the most, and one cron trigger per run of consecutive periods above the minimum
    (crons[t] = (start, end) cron expressions of period t). Runs stop at the end of the horizon."""
    low = min(counts)
    triggers = []
    t = 0
    while t < len(counts):
        if counts[t] == low:
            t += 1
            continue
        u = t
        while u + 1 < len(counts) and counts[u + 1] == counts[t]:
            u += 1
        triggers.append({"type": "cron", "metadata": {
            "timezone": timezone, "start": crons[t][0], "end": crons[u][1], "desiredReplicas": str(counts[t])}})
        t = u + 1
    return yaml_doc({
        "apiVersion": KEDA_API,
        "kind": "ScaledObject",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpumix", "gpumix/group": name}},
        "spec": {"scaleTargetRef": {"name": name}, "minReplicaCount": low, "maxReplicaCount": max(counts),
                 "triggers": triggers},
    }, [f"replicas per period (gpumix plan with periods): {' '.join(map(str, counts))}",
        "needs KEDA in the cluster (keda.sh); outside these cron windows the Deployment runs minReplicaCount"])
