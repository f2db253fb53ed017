"""A plan as launch files: vLLM command lines, Kubernetes manifests, SkyPilot tasks, router weights.

Pure functions from the plan JSON (docs/formats.md) to {relative path: text}; nothing is written
here. Names follow the replica groups: `<model>-<gpu>-tp<N>[-spot]` in DNS-1123 form, the same in
every format and in router-weights.json, so a router can address what the manifests start.
"""
from __future__ import annotations

import json

from gpumix.planner.errors import InputError
from gpumix.planner.export.groups import Group, check_nodes, groups_of, hf_id, max_model_len, router_weights, shared_of
from gpumix.planner.export.k8s import (DEFAULT_IMAGE, K8S_GPU_PRODUCT, ROCM_IMAGE, SPOT_LABEL, k8s_files,
                                       k8s_shared_files)
from gpumix.planner.export.skypilot import skypilot_files, skypilot_shared_files
from gpumix.planner.export.vllm import vllm_files, vllm_shared_files

FORMATS = ("vllm", "k8s", "skypilot")

__all__ = ["DEFAULT_IMAGE", "FORMATS", "K8S_GPU_PRODUCT", "ROCM_IMAGE", "SPOT_LABEL", "export", "groups_of", "hf_id"]


def export(plan: dict, formats, source: str = "<plan>", image: str = DEFAULT_IMAGE, rocm_image: str = ROCM_IMAGE,
           spot_label: tuple[str, str] = SPOT_LABEL) -> dict[str, str]:
    """{relative path: text} for the formats asked, plus router-weights.json. `image` runs NVIDIA
    groups in k8s, `rocm_image` AMD ones; `spot_label` (key, value) pins k8s spot groups."""
    if isinstance(plan, dict) and plan.get("periods") is not None:  # a schedule (docs/schedule.md)
        from gpumix.planner.export.schedule import schedule_files
        return schedule_files(plan, formats, source, image, rocm_image, spot_label)
    groups = groups_of(plan, source)
    shared = shared_of(plan, source)
    check_nodes(plan, shared, source)
    members = [Group(g.name, m, g.gpu, g.tp, g.count, False, routes) for g in shared for m, _, routes in g.members]
    max_len = max_model_len(groups + members)
    files = {"router-weights.json": json.dumps(router_weights(groups + members), indent=2) + "\n"}
    for fmt in formats:
        if fmt == "vllm":
            files.update(vllm_files(plan, groups, max_len))
        elif fmt == "k8s":
            files.update(k8s_files(groups, image, rocm_image, spot_label))
        elif fmt == "skypilot":
            files.update(skypilot_files(plan, groups, max_len, rocm_image))
        else:
            raise InputError(source, "--format", f"unknown format {fmt!r} (expected {', '.join(FORMATS)})")
        if fmt == "vllm":
            files.update(vllm_shared_files(shared, max_len))
        elif fmt == "k8s":
            files.update(k8s_shared_files(shared, max_len, image, rocm_image))
        elif not plan.get("nodes"):  # skypilot: node tasks already run the shared sets
            files.update(skypilot_shared_files(shared, max_len, rocm_image))
    return files
