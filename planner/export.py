"""A plan as launch files: vLLM command lines, Kubernetes manifests, SkyPilot tasks, router weights.

Pure functions from the plan JSON (docs/formats.md) to {relative path: text}; nothing is written
here. Names follow the replica groups: `<model>-<gpu>-tp<N>[-spot]` in DNS-1123 form, the same in
every format and in router-weights.json, so a router can address what the manifests start.
"""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache

import yaml

from gpumix.data import DATA_DIR
from gpumix.planner.catalog import norm_name
from gpumix.planner.errors import InputError

FORMATS = ("vllm", "k8s", "skypilot")
PORT = 8000
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
# SkyPilot accelerator names where they differ from gpumix's
SKY_ACCELERATOR = {"A100-40GB": "A100", "V100": "V100-32GB"}
# bundled-catalog regions that name a cloud without regions (data/instances.json)
SKY_CLOUD_REGIONS = {"lambda": "lambda", "runpod": "runpod"}


@dataclass(frozen=True)
class Group:
    name: str
    model: str
    gpu: str
    tp: int
    count: int
    spot: bool
    routes: tuple[dict, ...]


def dns_name(text: str, limit: int = 63) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].rstrip("-") or "x"


@lru_cache(maxsize=1)
def _hf_ids() -> dict[str, str]:
    doc = json.loads((DATA_DIR / "models" / "index.json").read_text())
    out = {}
    for m in doc["models"]:
        if m.get("hf_id"):
            for alias in (m["name"], m["hf_id"], *m.get("aliases", ())):
                out[norm_name(alias)] = m["hf_id"]
    return out


def hf_id(model: str) -> str | None:
    """The Hugging Face id for a plan model name; a name with an org prefix is taken as one."""
    if "/" in model:
        return model
    return _hf_ids().get(norm_name(model))


def groups_of(plan: object, source: str = "<plan>") -> list[Group]:
    """The plan's replica groups, validated enough to export (InputError names the field)."""
    if not isinstance(plan, dict) or not isinstance(plan.get("replicas"), list):
        raise InputError(source, "replicas", "not a gpumix plan (no `replicas` list)")
    out, seen = [], set()
    for i, g in enumerate(plan["replicas"]):
        where = f"replicas[{i}]"
        if not isinstance(g, dict):
            raise InputError(source, where, "must be a mapping")
        for key, typ in (("model", str), ("gpu", str), ("tp", int), ("count", int), ("routes", list)):
            if not isinstance(g.get(key), typ) or isinstance(g.get(key), bool):
                raise InputError(source, f"{where}.{key}", "missing or of the wrong type")
        if g["count"] < 1:
            continue
        spot = bool(g.get("spot"))
        name = dns_name(f"{g['model']}-{g['gpu']}-tp{g['tp']}" + ("-spot" if spot else ""))
        if name in seen:
            raise InputError(source, where, f"two replica groups map to the name {name!r}")
        seen.add(name)
        out.append(Group(name, g["model"], g["gpu"], g["tp"], g["count"], spot, tuple(g["routes"])))
    if not out and not plan.get("shared"):
        raise InputError(source, "replicas", "the plan has no replicas to export")
    return out


@dataclass(frozen=True)
class SharedGroup:
    """One set of `tp` GPUs (times `count`) hosting several models: one vLLM server per model on the
    same GPUs, each with its share of GPU memory (--gpu-memory-utilization) and its own port."""
    name: str
    gpu: str
    tp: int
    count: int
    members: tuple[tuple[str, float, tuple[dict, ...]], ...]  # (model, memory GB per GPU, routes)

    def port(self, model: str) -> int:
        return PORT + [m for m, _, _ in self.members].index(model)


def shared_of(plan: dict, source: str = "<plan>") -> list[SharedGroup]:
    out = []
    for i, g in enumerate(plan.get("shared") or []):
        where = f"shared[{i}]"
        if not isinstance(g, dict) or not isinstance(g.get("models"), list):
            raise InputError(source, where, "must be a mapping with a `models` list")
        for key, typ in (("gpu", str), ("tp", int), ("count", int)):
            if not isinstance(g.get(key), typ) or isinstance(g.get(key), bool):
                raise InputError(source, f"{where}.{key}", "missing or of the wrong type")
        members = []
        for j, m in enumerate(g["models"]):
            if not isinstance(m, dict) or not isinstance(m.get("model"), str) or not isinstance(m.get("routes"), list):
                raise InputError(source, f"{where}.models[{j}]", "needs `model` and `routes`")
            members.append((m["model"], float(m.get("memory_gb_per_gpu") or 0.0), tuple(m["routes"])))
        out.append(SharedGroup(dns_name(f"shared-{i}-{g['gpu']}-tp{g['tp']}"), g["gpu"], g["tp"], g["count"],
                               tuple(members)))
    return out


def _memory_fraction(gpu: str, memory_gb: float, members: int) -> float:
    """vLLM's --gpu-memory-utilization for one co-located server: its planned memory over the GPU's."""
    from gpumix.planner.catalog import load_catalog

    spec = load_catalog().gpu(gpu)
    if spec is None or memory_gb <= 0:
        return round(0.9 / members, 3)
    return max(round(memory_gb / spec.memory_gb, 3), 0.01)


def shared_script(g: SharedGroup, max_len: dict[str, int]) -> str:
    lines = [f"#!/bin/sh\n# shared set: {', '.join(m for m, _, _ in g.members)} on {g.tp} x {g.gpu}; "
             f"run on each of {g.count} set{'s' if g.count != 1 else ''}\n",
             _model_comment(m for m, _, _ in g.members)]
    for model, mem, _ in g.members:
        args = [*vllm_args(model, g.tp, g.port(model), max_len.get(model)),
                "--gpu-memory-utilization", str(_memory_fraction(g.gpu, mem, len(g.members)))]
        lines.append(shlex.join(["vllm", "serve", *args]) + " &\n")
    lines.append("wait\n")
    return "".join(lines)


def _max_model_len(groups: list[Group]) -> dict[str, int]:
    """Per model: its longest bucket (input + output) rounded up to a power of two. Without a cap vLLM
    sizes for the model's full context, which does not fit small GPUs; raise it if requests run
    longer than their bucket."""
    longest: dict[str, int] = {}
    for g in groups:
        for r in g.routes:
            longest[g.model] = max(longest.get(g.model, 1), int(r["input_tokens"]) + int(r["output_tokens"]))
    return {m: 1 << (n - 1).bit_length() for m, n in longest.items()}


def vllm_args(model: str, tp: int, port: int, max_len: int | None) -> list[str]:
    args = [hf_id(model) or model, "--served-model-name", model, "--tensor-parallel-size", str(tp),
            "--port", str(port)]
    if max_len:
        args += ["--max-model-len", str(max_len)]
    return args


def _model_comment(models) -> str:
    unknown = sorted({m for m in models if hf_id(m) is None})
    if not unknown:
        return ""
    return "".join(f"# {m}: not in the model catalog; the name stands in for its Hugging Face id, "
                   f"replace it\n" for m in unknown)


def vllm_files(plan: dict, groups: list[Group], max_len: dict[str, int] | None = None) -> dict[str, str]:
    """One script per replica group (what each of its replicas runs) and, for instance plans, one per node."""
    max_len = _max_model_len(groups) if max_len is None else max_len
    files = {}
    for g in groups:
        cmd = shlex.join(["vllm", "serve", *vllm_args(g.model, g.tp, PORT, max_len.get(g.model))])
        files[f"vllm/{g.name}.sh"] = (
            f"#!/bin/sh\n# {g.model} on {g.gpu}{' (spot)' if g.spot else ''}: run this on each of {g.count} "
            f"replica{'s' if g.count != 1 else ''}, {g.tp} GPU{'s' if g.tp != 1 else ''} each\n"
            f"{_model_comment([g.model])}exec {cmd}\n")
    shared = shared_of(plan)
    for i, nd in enumerate(plan.get("nodes") or []):
        lines = [f"#!/bin/sh\n# node {i}: {nd['instance']} in {nd['region'] or '-'}"
                 f"{' (spot)' if nd.get('spot') else ''}, {nd['gpus']} x {nd['gpu']}\n",
                 _model_comment(_node_models(nd))]
        lines += [cmd + " &\n" for cmd in node_servers(nd, shared, max_len)]
        lines.append("wait\n")
        files[f"vllm/node-{i:03d}-{dns_name(nd['instance'])}.sh"] = "".join(lines)
    return files


def _node_models(nd: dict) -> list[str]:
    return [r["model"] for r in nd["replicas"]] + [m for r in nd.get("shared") or () for m in r["models"]]


def node_servers(nd: dict, shared: list[SharedGroup], max_len: dict[str, int]) -> list[str]:
    """The vLLM servers one node runs, pinned to their GPU ids and on ports PORT, PORT + 1, ...:
    one per replica, and one per model of each shared set on the node (its memory share each)."""
    cmds = []
    for r in nd["replicas"]:
        cmds.append((r["gpu_ids"], vllm_args(r["model"], r["tp"], PORT + len(cmds), max_len.get(r["model"]))))
    for r in nd.get("shared") or ():
        g = shared[r["group"]]
        for model, mem, _ in g.members:
            cmds.append((r["gpu_ids"], [*vllm_args(model, g.tp, PORT + len(cmds), max_len.get(model)),
                                        "--gpu-memory-utilization",
                                        str(_memory_fraction(g.gpu, mem, len(g.members)))]))
    return [f"CUDA_VISIBLE_DEVICES={','.join(map(str, ids))} " + shlex.join(["vllm", "serve", *args])
            for ids, args in cmds]


class _Dumper(yaml.SafeDumper):
    """No &anchors for shared dicts (kubectl reads them, people stumble); multi-line strings as |."""

    def ignore_aliases(self, data):
        return True


_Dumper.add_representer(str, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s,
                                                            style="|" if "\n" in s else None))


def _yaml(doc: dict, comment: str = "") -> str:
    return comment + yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=120)


def k8s_files(groups: list[Group], image: str = DEFAULT_IMAGE) -> dict[str, str]:
    """A Deployment per replica group (replicas = count, TP GPUs each, pinned to the GPU type) and
    a Service per model selecting all its groups' pods."""
    max_len = _max_model_len(groups)
    files = {}
    for g in groups:
        labels = {"app.kubernetes.io/part-of": "gpumix", "gpumix/model": dns_name(g.model), "gpumix/group": g.name}
        amd = g.gpu.upper().startswith("MI")
        resource = "amd.com/gpu" if amd else "nvidia.com/gpu"
        product = K8S_GPU_PRODUCT.get(g.gpu)
        selector = {"nvidia.com/gpu.product": product} if product else {"gpumix/gpu": dns_name(g.gpu)}
        comment = _model_comment([g.model])
        if not product:
            comment += f"# {g.gpu}: no known node label; label its nodes gpumix/gpu={dns_name(g.gpu)}\n"
        container = {
            "name": "vllm",
            "image": image,
            "command": ["vllm", "serve"],
            "args": vllm_args(g.model, g.tp, PORT, max_len.get(g.model)),
            "ports": [{"name": "http", "containerPort": PORT}],
            "resources": {"limits": {resource: g.tp}},
            "readinessProbe": {"httpGet": {"path": "/health", "port": PORT}, "periodSeconds": 10},
        }
        pod = {"nodeSelector": selector, "containers": [container]}
        if g.tp > 1:  # NCCL between the TP ranks needs more shared memory than the 64 MiB default
            container["volumeMounts"] = [{"name": "shm", "mountPath": "/dev/shm"}]
            pod["volumes"] = [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}}]
        files[f"k8s/{g.name}-deployment.yaml"] = _yaml({
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
        files[f"k8s/{name}-service.yaml"] = _yaml({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpumix", "gpumix/model": name}},
            "spec": {"selector": {"gpumix/model": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": PORT}]},
        }, "# spreads requests evenly over the model's pods; router-weights.json has the planned split\n")
    return files


def _resources(gpu: str, gpus: int, region: str, spot: bool, instance: str | None = None) -> dict:
    res: dict = {"accelerators": f"{SKY_ACCELERATOR.get(gpu, gpu)}:{gpus}"}
    if region in SKY_CLOUD_REGIONS:
        res["cloud"] = SKY_CLOUD_REGIONS[region]
    elif region:
        res["region"] = region
    if instance and "+" not in instance and region not in SKY_CLOUD_REGIONS:
        res["instance_type"] = instance  # GCP pairs (host+GPU) and stand-in names are not instance types
    res["use_spot"] = spot
    return res


def skypilot_files(plan: dict, groups: list[Group], max_len: dict[str, int] | None = None) -> dict[str, str]:
    """Instance plans: a task per set of identical nodes (num_nodes, each node runs its replicas and
    shared sets). Plans without nodes: a task per replica group, with a SkyServe `service` section
    for its count."""
    max_len = _max_model_len(groups) if max_len is None else max_len
    files = {}
    setup = "pip install vllm"
    nodes = plan.get("nodes") or []
    if nodes:
        shared = shared_of(plan)
        sets: dict[str, list] = {}
        for nd in nodes:
            sig = json.dumps([nd["instance"], nd["region"], bool(nd.get("spot")),
                              sorted((r["model"], r["tp"], tuple(r["gpu_ids"])) for r in nd["replicas"]),
                              sorted((r["group"], tuple(r["gpu_ids"])) for r in nd.get("shared") or ())])
            sets.setdefault(sig, []).append(nd)
        for i, same in enumerate(sets.values()):
            nd = same[0]
            run = [cmd + " &" for cmd in node_servers(nd, shared, max_len)]
            name = dns_name(f"gpumix-{i:02d}-{nd['instance']}" + ("-spot" if nd.get("spot") else ""))
            serving = [f"{r['model']} TP{r['tp']}" for r in nd["replicas"]] + \
                [f"shared set #{r['group']} ({', '.join(r['models'])}) TP{r['tp']}" for r in nd.get("shared") or ()]
            files[f"skypilot/{name}.yaml"] = _yaml({
                "name": name,
                "num_nodes": len(same),
                "resources": _resources(nd["gpu"], nd["gpus"], nd["region"], bool(nd.get("spot")), nd["instance"]),
                "setup": setup,
                "run": "\n".join(run + ["wait"]) + "\n",
            }, f"# sky launch -c {name} {name}.yaml: {len(same)} x {nd['instance']}, each serving "
               + ", ".join(serving) + "\n" + _model_comment(_node_models(nd)))
        return files
    for g in groups:
        cmd = shlex.join(["vllm", "serve", *vllm_args(g.model, g.tp, PORT, max_len.get(g.model))])
        files[f"skypilot/{g.name}.yaml"] = _yaml({
            "name": g.name,
            "resources": {**_resources(g.gpu, g.tp, "", g.spot), "ports": PORT},
            "service": {"readiness_probe": "/health", "replicas": g.count},
            "setup": setup,
            "run": cmd + "\n",
        }, f"# sky serve up {g.name}.yaml starts {g.count} replica{'s' if g.count != 1 else ''}; "
           f"sky launch starts one\n" + _model_comment([g.model]))
    return files


def router_weights(groups: list[Group]) -> dict:
    """Per model, per bucket: each replica group's share of the bucket's routed traffic."""
    models: dict[str, dict] = {}
    for g in groups:
        for r in g.routes:
            key = (int(r["input_tokens"]), int(r["output_tokens"]))
            models.setdefault(g.model, {}).setdefault(key, []).append((g, float(r["rps"])))
    out = {}
    for model in sorted(models):
        buckets = []
        for (i, o), rows in sorted(models[model].items()):
            total = sum(rps for _, rps in rows)
            buckets.append({
                "input_tokens": i, "output_tokens": o, "rps": round(total, 9),
                "groups": [{"group": g.name, "gpu": g.gpu, "tp": g.tp, "spot": g.spot, "rps": round(rps, 9),
                            "weight": round(rps / total, 9) if total > 0 else round(1 / len(rows), 9)}
                           for g, rps in sorted(rows, key=lambda x: x[0].name)],
            })
        out[model] = {"service": dns_name(model), "buckets": buckets}
    return {"schema_version": 1,
            "note": "send a request of a bucket to a group with probability `weight` (the group's share of "
                    "the bucket's planned req/s); group names match the k8s Deployments, vllm scripts and "
                    "SkyPilot tasks",
            "models": out}


def shared_files(fmt: str, shared: list[SharedGroup], max_len: dict[str, int],
                 image: str = DEFAULT_IMAGE) -> dict[str, str]:
    """Shared GPU sets: one script starting a vLLM server per model on the same GPUs; k8s runs it in
    one container (a GPU cannot be split between containers) with a Service per model and port;
    SkyPilot runs it as one task per set."""
    files = {}
    for g in shared:
        script = shared_script(g, max_len)
        ports = [g.port(m) for m, _, _ in g.members]
        if fmt == "vllm":
            files[f"vllm/{g.name}.sh"] = script
        elif fmt == "k8s":
            labels = {"app.kubernetes.io/part-of": "gpumix", "gpumix/group": g.name}
            product = K8S_GPU_PRODUCT.get(g.gpu)
            container = {"name": "vllm", "image": image, "command": ["sh", "-c", script],
                         "ports": [{"name": f"http-{j}", "containerPort": p} for j, p in enumerate(ports)],
                         "resources": {"limits": {"nvidia.com/gpu": g.tp}}}
            files[f"k8s/{g.name}-deployment.yaml"] = _yaml({
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
                files[f"k8s/{name}-service.yaml"] = _yaml({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "gpumix",
                                                          "gpumix/model": dns_name(model)}},
                    "spec": {"selector": {"gpumix/group": g.name},
                             "ports": [{"name": "http", "port": 80, "targetPort": g.port(model)}]},
                }, f"# {model} on the shared set {g.name}\n")
        elif fmt == "skypilot":
            files[f"skypilot/{g.name}.yaml"] = _yaml({
                "name": g.name,
                "resources": {**_resources(g.gpu, g.tp, "", False), "ports": ports},
                "service": {"readiness_probe": "/health", "replicas": g.count},
                "setup": "pip install vllm",
                "run": script.split("\n", 1)[1],
            }, f"# sky serve up {g.name}.yaml: shared set of {', '.join(m for m, _, _ in g.members)}\n")
    return files


def export(plan: dict, formats, source: str = "<plan>", image: str = DEFAULT_IMAGE) -> dict[str, str]:
    """{relative path: text} for the formats asked, plus router-weights.json."""
    groups = groups_of(plan, source)
    shared = shared_of(plan, source)
    members = [Group(g.name, m, g.gpu, g.tp, g.count, False, routes) for g in shared for m, _, routes in g.members]
    max_len = _max_model_len(groups + members)
    files = {"router-weights.json": json.dumps(router_weights(groups + members), indent=2) + "\n"}
    for fmt in formats:
        if fmt == "vllm":
            files.update(vllm_files(plan, groups, max_len))
        elif fmt == "k8s":
            files.update(k8s_files(groups, image))
        elif fmt == "skypilot":
            files.update(skypilot_files(plan, groups, max_len))
        else:
            raise InputError(source, "--format", f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
        if not (fmt == "skypilot" and plan.get("nodes")):  # node tasks already run the shared sets
            files.update(shared_files(fmt, shared, max_len, image))
    return files
