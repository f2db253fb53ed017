"""vLLM launch scripts: one per replica group, per node of an instance plan, and per shared set.

Nothing from a plan reaches a script unquoted: commands go through shlex.join, GPU ids are checked
integers, and names in `#` lines through groups.comment (no newline or other line break survives).
"""
from __future__ import annotations

import shlex

from gpumix.planner.export.groups import (PORT, Group, SharedGroup, comment, dns_name, gpu_ids, max_model_len,
                                          memory_fraction, model_arg, model_comment, node_models, shared_of,
                                          shown, vllm_args)


def shared_script(g: SharedGroup, max_len: dict[str, int]) -> str:
    lines = ["#!/bin/sh\n",
             comment(f"shared set: {', '.join(shown(m) for m, _, _ in g.members)} on {g.tp} x {shown(g.gpu)}; "
                     f"run on each of {g.count} set{'s' if g.count != 1 else ''}"),
             model_comment(m for m, _, _ in g.members)]
    for model, mem, _ in g.members:
        args = [*g.vllm_args(model, g.port(model), max_len.get(model)),
                "--gpu-memory-utilization", str(memory_fraction(g.gpu, mem, len(g.members)))]
        lines.append(shlex.join(["vllm", "serve", *args]) + " &\n")
    lines.append("wait\n")
    return "".join(lines)


def vllm_files(plan: dict, groups: list[Group], max_len: dict[str, int] | None = None) -> dict[str, str]:
    """One script per replica group (what each of its replicas runs) and, for instance plans, one per node."""
    max_len = max_model_len(groups) if max_len is None else max_len
    files = {}
    for g in groups:
        cmd = shlex.join(["vllm", "serve", *vllm_args(g.model, g.tp, PORT, max_len.get(g.model), g.quantization,
                                                       g.kv_cache_dtype)])
        files[f"vllm/{g.name}.sh"] = (
            "#!/bin/sh\n"
            + comment(f"{shown(g.model)} on {shown(g.gpu)}{' (spot)' if g.spot else ''}: run this on each of "
                      f"{g.count} replica{'s' if g.count != 1 else ''}, {g.tp} GPU{'s' if g.tp != 1 else ''} each")
            + f"{model_comment([g.model])}exec {cmd}\n")
    shared = shared_of(plan)
    for i, nd in enumerate(plan.get("nodes") or []):
        lines = ["#!/bin/sh\n",
                 comment(f"node {i}: {shown(nd['instance'])} in {shown(nd.get('region') or '-')}"
                         f"{' (spot)' if nd.get('spot') else ''}, {nd['gpus']} x {shown(nd['gpu'])}"),
                 model_comment(node_models(nd))]
        lines += [cmd + " &\n" for cmd in node_servers(nd, shared, max_len)]
        lines.append("wait\n")
        files[f"vllm/node-{i:03d}-{dns_name(nd['instance'])}.sh"] = "".join(lines)
    return files


def node_servers(nd: dict, shared: list[SharedGroup], max_len: dict[str, int]) -> list[str]:
    """The vLLM servers one node runs, pinned to their GPU ids and on ports PORT, PORT + 1, ...:
    one per replica, and one per model of each shared set on the node (its memory share each)."""
    cmds = []
    for r in nd["replicas"]:
        model_arg(r.get("model"), "<plan>", "nodes[].replicas[].model")
        cmds.append((r["gpu_ids"], vllm_args(r["model"], r["tp"], PORT + len(cmds), max_len.get(r["model"]),
                                             r.get("quantization", "none"), r.get("kv_cache_dtype", "auto"))))
    for r in nd.get("shared") or ():
        g = shared[r["group"]]
        for model, mem, _ in g.members:
            cmds.append((r["gpu_ids"], [*g.vllm_args(model, PORT + len(cmds), max_len.get(model)),
                                        "--gpu-memory-utilization",
                                        str(memory_fraction(g.gpu, mem, len(g.members)))]))
    return [f"CUDA_VISIBLE_DEVICES={shlex.quote(gpu_ids(ids))} " + shlex.join(["vllm", "serve", *args])
            for ids, args in cmds]


def vllm_shared_files(shared: list[SharedGroup], max_len: dict[str, int]) -> dict[str, str]:
    """One script per shared set, starting a vLLM server per model on the same GPUs."""
    return {f"vllm/{g.name}.sh": shared_script(g, max_len) for g in shared}
