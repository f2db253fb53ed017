"""The plan: a JSON document (schema_version 1), built from a solution, written atomically.

Contract (docs/formats.md): status, cost_per_hour, lower_bound_per_hour and `replicas` with
model, gpu, tp, count and routes (input_tokens, output_tokens, rps: total req/s of the bucket sent
to the group). Extra keys help people read it. Nothing run-dependent (wall times) goes into the
file, so the same input gives the same bytes.
"""
from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from pathlib import Path

from gpumix.planner.problem import Config, Problem
from gpumix.planner.sharing import SetItem

SCHEMA_VERSION = 1


def make_plan(problem: Problem, status: str, cost: float, bound: float, replicas: dict,
              routes: dict, *, baseline: dict | None = None, inputs: dict | None = None,
              solver: dict | None = None, shared: list[dict] | None = None) -> dict:
    """`shared` (planner/sharing.shared_entries, --share-gpus): groups of GPU sets hosting several
    models; their GPUs count in `gpus`, their cost in each model's cost (by time share)."""
    groups = _groups(problem, replicas, routes)
    used: dict[str, int] = {}
    for key, count in replicas.items():
        c = key if isinstance(key, Config) else key[0]
        used[c.gpu] = used.get(c.gpu, 0) + c.tp * count
    for grp in shared or ():
        used[grp["gpu"]] = used.get(grp["gpu"], 0) + grp["gpus"]
    gpus = [{
        "name": g,
        "used": used[g],
        "available": problem.available.get(g),
        "price_per_gpu_hour": problem.price[g],
        "cost_per_hour": round(problem.price[g] * used[g], 9),
        **({"price_source": problem.price_source[g]} if g in problem.price_source else {}),
    } for g in sorted(used)]
    cost = round(cost, 9)  # drop float noise (46.436600000000006); the bound rounds down, staying valid
    bound = min(math.floor(bound * 1e9) / 1e9, cost)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "cost_per_hour": cost,
        "lower_bound_per_hour": bound,
        "gap": 0.0 if cost <= 0 else max(cost - bound, 0.0) / cost,
        "max_utilization": problem.max_utilization,
        "replicas": groups,
        "models": _models(problem, groups, shared),
        "gpus": gpus,
        "baseline": baseline,
        "solver": solver or {},
        "inputs": inputs or {},
    }
    if shared is not None:  # only plans made with --share-gpus have the key
        doc["shared"] = shared
    return doc


def _groups(problem: Problem, replicas: dict, routes: dict) -> list[dict]:
    """The plan's `replicas` list: one group per config (and variant), with its routes."""
    by_config: dict = {}
    for (key, k), v in routes.items():
        by_config.setdefault(key, []).append((k, v))
    groups = []
    for key, count in replicas.items():
        # a key is a Config, or (Config, on spot) in instance plans: one group per variant
        c, spot = (key, None) if isinstance(key, Config) else key
        rs = by_config.get(key, [])
        load = sum(v / problem.capacity[c][k] for k, v in rs)
        groups.append({
            "model": c.model,
            "gpu": c.gpu,
            "tp": c.tp,
            "quantization": c.quantization,
            "kv_cache_dtype": c.kv_cache_dtype,
            "count": count,
            "gpus": c.tp * count,
            "price_per_gpu_hour": problem.price[c.gpu],
            "cost_per_hour": round(problem.price[c.gpu] * c.tp * count, 9),
            "utilization": load / count,
            "routes": [{
                "input_tokens": k[0],
                "output_tokens": k[1],
                "rps": v,
                "max_rps": problem.capacity[c][k],
                "source": problem.source.get((c, k), "estimated"),
            } for k, v in rs],
        })
        if spot is not None:
            groups[-1]["spot"] = spot
    return groups


def _models(problem: Problem, groups: list[dict], shared: list[dict] | None) -> list[dict]:
    """The plan's `models` list: rate, cost and GPUs per model; a shared group's cost is split over
    its models by time share (evenly if idle)."""
    share_cost: dict[str, float] = {}
    for grp in shared or ():
        busy = sum(e["time_fraction"] for e in grp["models"])
        for e in grp["models"]:
            part = e["time_fraction"] / busy if busy > 0 else 1 / len(grp["models"])
            share_cost[e["model"]] = share_cost.get(e["model"], 0.0) + round(grp["cost_per_hour"] * part, 9)
    by_model: dict = {}
    for grp in groups:
        by_model.setdefault(grp["model"], []).append(grp)
    models = []
    for m in problem.models:
        mine = by_model.get(m, [])
        models.append({
            "name": m,
            "rate_rps": sum(problem.demand[(m, k)] for k in problem.buckets[m]),
            "cost_per_hour": sum(grp["cost_per_hour"] for grp in mine),
            "gpus": sum(grp["gpus"] for grp in mine),
        })
        if m in share_cost:
            models[-1]["cost_per_hour"] += share_cost[m]
            models[-1]["shared"] = True
    return models


def node_entries(nodes, shared: list[dict] | None = None) -> list[dict]:
    """solvers.stage2.packing.Node records as the plan's `nodes` list. A node holding sets of shared groups
    (planner.sharing.SetItem items) lists them under `shared`: group index into the plan's
    `shared`, its models, tp and GPU ids."""
    out = []
    for nd in nodes:
        entry = {
            "instance": nd.instance.name,
            "region": nd.instance.region,
            "gpu": nd.instance.gpu,
            "gpus": nd.instance.gpus,
            "spot": nd.spot,
            "price_per_hour": nd.price,
            "replicas": [{"model": r.config.model, "tp": r.config.tp, "quantization": r.config.quantization,
                          "kv_cache_dtype": r.config.kv_cache_dtype, "gpu_ids": list(r.gpu_ids)}
                         for r in nd.replicas if not isinstance(r.config, SetItem)],
        }
        sets = [r for r in nd.replicas if isinstance(r.config, SetItem)]
        if sets:
            entry["shared"] = [{"group": r.config.group,
                                "models": [e["model"] for e in shared[r.config.group]["models"]],
                                "tp": r.config.tp, "gpu_ids": list(r.gpu_ids)} for r in sets]
        out.append(entry)
    return out


def make_node_plan(problem: Problem, status: str, cost: float, bound: float, replicas: dict, routes: dict,
                   nodes, *, fractions: dict | None = None, extra: dict | None = None, **kw) -> dict:
    """An instance plan: make_plan's document plus `nodes`; cost_per_hour is the sum of node prices.
    `fractions` (partial plans) adds served_fraction per model; `extra` adds keys as given."""
    plan = make_plan(problem, status, cost, bound, replicas, routes, **kw)
    plan["nodes"] = node_entries(nodes, kw.get("shared"))
    plan["price_basis"] = ("cost_per_hour is the sum of node prices; per-group and per-model costs are at "
                           "each GPU type's cheapest instance $/GPU-hour")
    return _annotate(plan, fractions, extra)


def make_partial_plan(problem: Problem, status: str, cost: float, bound: float, replicas: dict, routes: dict,
                      fractions: dict, *, extra: dict | None = None, **kw) -> dict:
    """A plan without nodes that serves a share of some models' demand (--allow-partial)."""
    return _annotate(make_plan(problem, status, cost, bound, replicas, routes, **kw), fractions, extra)


def _annotate(plan: dict, fractions: dict | None, extra: dict | None) -> dict:
    """Partial plans get served_fraction per model; `extra` keys are added as given."""
    if fractions is not None:
        plan["partial"] = True
        for m in plan["models"]:
            m["served_fraction"] = fractions.get(m["name"], 0.0)
    for key, v in (extra or {}).items():
        plan[key] = v
    return plan


def dumps(plan: dict) -> str:
    return json.dumps(plan, indent=2) + "\n"


def umask() -> int:
    """The process umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode(executable: bool = False) -> int:
    """A new file's mode as open() would give it: 0o666 (0o777 for scripts) less the umask."""
    return (0o777 if executable else 0o666) & ~umask()


def write_atomic(path: Path | str, text: str | bytes, executable: bool = False) -> Path:
    """Write via a temp file in the same folder and rename: readers see the old file or the new one.
    A symlink is followed (its target is replaced, the link stays); the mode follows the umask
    (mkstemp alone gives 0600). Returns the path written."""
    given = Path(path)
    path = Path(os.path.realpath(path))
    if given.is_symlink():
        if path.is_symlink():  # realpath stops on a loop: there is no target to write
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(given))
        if not path.parent.is_dir():  # a dangling link: never create folders wherever it points
            raise FileNotFoundError(2, f"the symlink points into {path.parent}, which does not exist", str(given))
        made = []
    else:
        made = make_parents(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except BaseException:
        remove_dirs(made)
        raise
    try:
        os.fchmod(fd, file_mode(executable))
        with (os.fdopen(fd, "wb") if isinstance(text, bytes) else os.fdopen(fd, "w", encoding="utf-8")) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        remove_dirs(made)
        raise
    return path


def make_parents(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders it created, outermost first, for remove_dirs."""
    missing = []
    p = Path(folder)
    while not p.exists() and not p.is_symlink() and p != p.parent:
        missing.append(p)
        p = p.parent
    made = []
    try:
        for d in reversed(missing):
            d.mkdir()
            made.append(d)
    except BaseException:
        remove_dirs(made)
        raise
    return made


def remove_dirs(made: list[Path]) -> None:
    """Undo make_parents after a failed write: nothing is left behind (a folder no longer empty stays)."""
    for d in reversed(made):
        try:
            d.rmdir()
        except OSError:
            pass
