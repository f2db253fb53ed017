"""Re-planning against a running plan: read its nodes, count what a new plan starts, stops, keeps.

A replica is kept when the new plan runs the same (model, GPU, TP, spot) on the same current node;
every other replica of the new plan is started (a moved replica is a stop plus a start); every
replica of the current plan not kept is stopped. Churn is priced per replica started.
"""
from __future__ import annotations

from gpumix.planner.errors import InputError
from gpumix.planner.problem import Config, Problem, config_of
from gpumix.planner.reading import in_bounds, quote
from gpumix.planner.workload import read_structured
from gpumix.solvers.stage2.packing import CurrentNode, Node, Placed

Item = tuple[Config, bool]


def _config(d: dict) -> Config:
    """config_of a current group or node replica, its names text and its TP an integer in bounds
    (TypeError otherwise: the callers turn it into one line naming the file and the entry)."""
    c = config_of({**d, "tp": int(d["tp"])})
    for key in ("model", "gpu", "quantization", "kv_cache_dtype"):
        if not isinstance(getattr(c, key), str):
            raise TypeError(f"{key} must be text, got {quote(getattr(c, key))}")
    if not in_bounds(c.tp, "tp"):
        raise ValueError(f"tp {quote(c.tp)} out of range")
    return c


def read_current(path, problem: Problem, instances) -> tuple[tuple[CurrentNode, ...], dict[Item, int]]:
    """The current plan's nodes (empty without `nodes`) and its replica counts per (config, spot)."""
    doc = read_structured(path)
    where = str(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("replicas"), list):
        raise InputError(where, "replicas", "not a gpumix plan (no `replicas` list)")
    counts: dict[Item, int] = {}
    nodes = []
    by_key = {i.key: i for i in instances or ()}
    if doc.get("nodes") is not None:
        if not isinstance(doc["nodes"], list):
            raise InputError(where, "nodes", "must be a list")
        for j, nd in enumerate(doc["nodes"]):
            w = f"nodes[{j}]"
            try:
                inst = by_key.get((nd["instance"], nd.get("region", "")))
                spot = bool(nd.get("spot", False))
                placed = tuple(Placed(_config({**r, "gpu": nd["gpu"]}), tuple(int(i) for i in r["gpu_ids"]))
                               for r in nd["replicas"])
            except (KeyError, TypeError, ValueError, OverflowError) as e:
                raise InputError(where, w, f"malformed node ({e})") from None
            nodes.append(CurrentNode(inst, spot, placed))
            for p in placed:
                counts[(p.config, spot)] = counts.get((p.config, spot), 0) + 1
    else:
        for j, g in enumerate(doc["replicas"]):
            try:
                key = (_config(g), bool(g.get("spot", False)))
                counts[key] = counts.get(key, 0) + int(g["count"])
            except (KeyError, TypeError, ValueError, OverflowError) as e:
                raise InputError(where, f"replicas[{j}]", f"malformed group ({e})") from None
    return tuple(nodes), counts


def diff_nodes(current: tuple[CurrentNode, ...], new: tuple[Node, ...]) -> dict:
    """start / stop / keep lists, one entry per replica, with the node it runs on: `node` indexes the
    new plan's nodes for start and keep, the current plan's for stop (a stopped replica's node may
    not be in the new plan)."""
    start, stop, keep = [], [], []
    continued = {nd.origin: nd for nd in new if nd.origin is not None}

    def entry(inst_name, region, spot, p: Placed, node_index):
        return {"node": node_index, "instance": inst_name, "region": region, "spot": spot,
                "model": p.config.model, "gpu": p.config.gpu, "tp": p.config.tp, "gpu_ids": list(p.gpu_ids)}

    index = {id(nd): j for j, nd in enumerate(new)}
    for ci, cur in enumerate(current):
        nd = continued.get(ci)
        name = cur.instance.name if cur.instance else "?"
        region = cur.instance.region if cur.instance else "?"
        new_set = {(p.config, p.gpu_ids) for p in nd.replicas} if nd else set()
        for p in cur.replicas:
            if (p.config, p.gpu_ids) in new_set:
                keep.append(entry(name, region, cur.spot, p, index[id(nd)]))
            else:
                stop.append(entry(name, region, cur.spot, p, ci))
    for nd in new:
        old = {(p.config, p.gpu_ids) for p in current[nd.origin].replicas} if nd.origin is not None else set()
        for p in nd.replicas:
            if (p.config, p.gpu_ids) not in old:
                start.append(entry(nd.instance.name, nd.instance.region, nd.spot, p, index[id(nd)]))
    return {"start": start, "stop": stop, "keep": keep}


def diff_counts(current: dict[Item, int], new: dict[Item, int]) -> dict:
    """Without nodes: replicas per (model, gpu, tp, spot) to start, stop and keep."""
    out = {"start": [], "stop": [], "keep": []}
    for key in sorted(set(current) | set(new)):
        c, spot = key
        a, b = current.get(key, 0), new.get(key, 0)
        row = {"model": c.model, "gpu": c.gpu, "tp": c.tp, "spot": spot}
        if min(a, b):
            out["keep"].append({**row, "count": min(a, b)})
        if b > a:
            out["start"].append({**row, "count": b - a})
        if a > b:
            out["stop"].append({**row, "count": a - b})
    return out
