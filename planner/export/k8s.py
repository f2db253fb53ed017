"""Kubernetes manifests: a Deployment per replica group or shared set, a Service per model."""
from __future__ import annotations

import yaml

from gpumix.planner.export.groups import PORT, Group, SharedGroup, dns_name, max_model_len, model_comment, vllm_args
from gpumix.planner.export.vllm import shared_script

DEFAULT_IMAGE = "vllm/vllm-openai:latest"

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


def yaml_doc(doc: dict, comment: str = "") -> str:
    return comment + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def k8s_files(groups: list[Group], image: str = DEFAULT_IMAGE) -> dict[str, str]:
    """A Deployment per replica group (replicas = count, TP GPUs each, pinned to the GPU type) and
    a Service per model selecting all its groups' pods."""
    max_len = max_model_len(groups)
    files = {}
    for g in groups:
        labels = {"app.kubernetes.io/part-of": "gpumix", "gpumix/model": dns_name(g.model), "gpumix/group": g.name}
        amd = g.gpu.upper().startswith("MI")
        resource = "amd.com/gpu" if amd else "nvidia.com/gpu"
        product = K8S_GPU_PRODUCT.get(g.gpu)
        selector = {"nvidia.com/gpu.product": product} if product else {"gpumix/gpu": dns_name(g.gpu)}
        comment = model_comment([g.model])
        if not product:
            comment += f"# {g.gpu}: no known node label; label its nodes gpumix/gpu={dns_name(g.gpu)}\n"
        container = {
            "name": "vllm",
            "image": image,
            "command": ["vllm", "serve"],
            "args": vllm_args(g.model, g.tp, PORT, max_len.get(g.model), g.quantization, g.kv_cache_dtype),
            "ports": [{"name": "http", "containerPort": PORT}],
            "resources": {"limits": {resource: g.tp}},
            "readinessProbe": {"httpGet": {"path": "/health", "port": PORT}, "periodSeconds": 10},
        }
        pod = {"nodeSelector": selector, "containers": [container]}
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
        }, comment)
    for model in sorted({g.model for g in groups}):
        name = dns_name(model)
        files[f"k8s/{name}-service.yaml"] = yaml_doc({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpumix", "gpumix/model": name}},
            "spec": {"selector": {"gpumix/model": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": PORT}]},
        }, "# spreads requests evenly over the model's pods; router-weights.json has the planned split\n")
    return files


def k8s_shared_files(shared: list[SharedGroup], max_len: dict[str, int], image: str) -> dict[str, str]:
    """A shared set runs its script in one container (a GPU cannot be split between containers),
    with a Service per model and port."""
    files = {}
    for g in shared:
        script = shared_script(g, max_len)
        ports = [g.port(m) for m, _, _ in g.members]
        labels = {"app.kubernetes.io/part-of": "gpumix", "gpumix/group": g.name}
        product = K8S_GPU_PRODUCT.get(g.gpu)
        container = {"name": "vllm", "image": image, "command": ["sh", "-c", script],
                     "ports": [{"name": f"http-{j}", "containerPort": p} for j, p in enumerate(ports)],
                     "resources": {"limits": {"nvidia.com/gpu": g.tp}}}
        files[f"k8s/{g.name}-deployment.yaml"] = yaml_doc({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": g.name, "labels": labels},
            "spec": {"replicas": g.count, "selector": {"matchLabels": {"gpumix/group": g.name}},
                     "template": {"metadata": {"labels": labels}, "spec": {
                         "nodeSelector": {"nvidia.com/gpu.product": product} if product
                         else {"gpumix/gpu": dns_name(g.gpu)},
                         "containers": [container]}}},
        }, f"# shared set: {', '.join(m for m, _, _ in g.members)}\n")
        for model, _, _ in g.members:
            name = dns_name(f"{model}-{g.name}")
            files[f"k8s/{name}-service.yaml"] = yaml_doc({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpumix",
                                                      "gpumix/model": dns_name(model)}},
                "spec": {"selector": {"gpumix/group": g.name},
                         "ports": [{"name": "http", "port": 80, "targetPort": g.port(model)}]},
            }, f"# {model} on the shared set {g.name}\n")
    return files
