"""SkyPilot tasks: a task per set of identical nodes of an instance plan, else a SkyServe task per
replica group or shared set."""
from __future__ import annotations

import json
import shlex

from gpumix.planner.export.groups import (PORT, Group, SharedGroup, dns_name, max_model_len, model_comment,
                                          node_models, shared_of, vllm_args)
from gpumix.planner.export.k8s import yaml_doc
from gpumix.planner.export.vllm import node_servers, shared_script

# SkyPilot accelerator names where they differ from gpumix's
SKY_ACCELERATOR = {"A100-40GB": "A100", "V100": "V100-32GB"}
# bundled-catalog regions that name a cloud without regions (data/instances.json)
SKY_CLOUD_REGIONS = {"lambda": "lambda", "runpod": "runpod"}


def sky_resources(gpu: str, gpus: int, region: str, spot: bool, instance: str | None = None) -> dict:
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
    max_len = max_model_len(groups) if max_len is None else max_len
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
            files[f"skypilot/{name}.yaml"] = yaml_doc({
                "name": name,
                "num_nodes": len(same),
                "resources": sky_resources(nd["gpu"], nd["gpus"], nd["region"], bool(nd.get("spot")), nd["instance"]),
                "setup": setup,
                "run": "\n".join(run + ["wait"]) + "\n",
            }, f"# sky launch -c {name} {name}.yaml: {len(same)} x {nd['instance']}, each serving "
               + ", ".join(serving) + "\n" + model_comment(node_models(nd)))
        return files
    for g in groups:
        cmd = shlex.join(["vllm", "serve", *vllm_args(g.model, g.tp, PORT, max_len.get(g.model), g.quantization,
                                                       g.kv_cache_dtype)])
        files[f"skypilot/{g.name}.yaml"] = yaml_doc({
            "name": g.name,
            "resources": {**sky_resources(g.gpu, g.tp, "", g.spot), "ports": PORT},
            "service": {"readiness_probe": "/health", "replicas": g.count},
            "setup": setup,
            "run": cmd + "\n",
        }, f"# sky serve up {g.name}.yaml starts {g.count} replica{'s' if g.count != 1 else ''}; "
           f"sky launch starts one\n" + model_comment([g.model]))
    return files


def skypilot_shared_files(shared: list[SharedGroup], max_len: dict[str, int]) -> dict[str, str]:
    """A shared set is one SkyServe task running its script."""
    files = {}
    for g in shared:
        script = shared_script(g, max_len)
        ports = [g.port(m) for m, _, _ in g.members]
        files[f"skypilot/{g.name}.yaml"] = yaml_doc({
            "name": g.name,
            "resources": {**sky_resources(g.gpu, g.tp, "", False), "ports": ports},
            "service": {"readiness_probe": "/health", "replicas": g.count},
            "setup": "pip install vllm",
            "run": script.split("\n", 1)[1],
        }, f"# sky serve up {g.name}.yaml: shared set of {', '.join(m for m, _, _ in g.members)}\n")
    return files
