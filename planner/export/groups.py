"""What every launch format reads from a plan: its replica groups and shared sets, names, vLLM
arguments and the router weights."""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from gpumix.data import DATA_DIR
from gpumix.planner.catalog import norm_name
from gpumix.planner.errors import InputError
from gpumix.planner.reading import BOUNDS

PORT = 8000
COMMENT_LIMIT = 200  # characters of one comment line; longer text is cut with "..."
NAME_LIMIT = 80  # characters of a name quoted in a comment


@dataclass(frozen=True)
class Group:
    name: str
    model: str
    gpu: str
    tp: int
    count: int
    spot: bool
    routes: tuple[dict, ...]
    quantization: str = "none"
    kv_cache_dtype: str = "auto"


def comment_text(text: object, limit: int = COMMENT_LIMIT) -> str:
    """`text` safe inside one `#` comment line of a shell script or YAML file: control and format
    characters and every line or paragraph separator (newline, CR, NEL, U+2028, U+2029) written as
    escapes (`\\n`, `\\u2028`), so nothing a name carries can end the comment; capped at `limit`."""
    s = "".join(c.encode("unicode_escape").decode("ascii")
                if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in ("Zl", "Zp") else c
                for c in str(text))
    return s if len(s) <= limit else s[:limit - 3] + "..."


def shown(name: object) -> str:
    """A name as a comment quotes it: comment_text, at most NAME_LIMIT characters."""
    return comment_text(name, NAME_LIMIT)


def comment(text: object) -> str:
    """One `# ...` line (with its newline) holding comment_text(text)."""
    return f"# {comment_text(text)}\n"


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


@lru_cache(maxsize=1)
def _vendors() -> dict[str, str]:
    doc = json.loads((DATA_DIR / "gpus.json").read_text())
    return {norm_name(alias): g.get("vendor", "nvidia") for g in doc["gpus"]
            for alias in (g["name"], *g.get("aliases", ()))}


def vendor(gpu: str) -> str:
    """`amd` or `nvidia` (data/gpus.json); GPUs outside the catalog count as NVIDIA."""
    return _vendors().get(norm_name(gpu), "nvidia")


def hf_id(model: str) -> str | None:
    """The Hugging Face id for a plan model name; a name with an org prefix is taken as one."""
    if "/" in model:
        return model
    return _hf_ids().get(norm_name(model))


def _precision(g: dict, source: str, where: str) -> tuple[str, str]:
    """A group's (quantization, kv_cache_dtype); plans from before precision was planned have neither."""
    from gpumix.planner.precision import KV_CACHE_DTYPES, QUANTIZATIONS

    quant, kv = g.get("quantization", "none"), g.get("kv_cache_dtype", "auto")
    if quant not in QUANTIZATIONS:
        raise InputError(source, f"{where}.quantization", f"must be one of {', '.join(QUANTIZATIONS)}")
    if kv not in KV_CACHE_DTYPES:
        raise InputError(source, f"{where}.kv_cache_dtype", f"must be one of {', '.join(KV_CACHE_DTYPES)}")
    return quant, kv


def model_arg(value: object, source: str, where: str) -> str:
    """A model name as an argument of `vllm serve`: one starting with `-` would be read as an option."""
    if not isinstance(value, str) or not value.strip() or value.startswith("-"):
        raise InputError(source, where, "a model name must not be empty or start with '-'")
    return _no_nul(value, source, where)


def _no_nul(value: str, source: str, where: str) -> str:
    """Every other character is escaped where it goes; a NUL cannot be: no command-line argument
    (`vllm serve`, a script) carries one."""
    if "\x00" in value:
        raise InputError(source, where, "holds a NUL character, which no command-line argument can carry")
    return value


def safe_name(value: object, source: str, where: str) -> str:
    """A GPU, instance or region name: a non-empty string. Whatever characters it holds, the
    formats escape it (shlex.quote, the YAML emitter, comment_text), as they do model names."""
    if not isinstance(value, str) or not value.strip():
        raise InputError(source, where, "must be a non-empty string")
    return _no_nul(value, source, where)


def _int(value: object, source: str, where: str, bound: str) -> int:
    lo, hi = BOUNDS[bound]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InputError(source, where, f"must be an integer in [{lo:g}, {hi:g}]")
    return value


def _routes(value: object, source: str, where: str) -> tuple[dict, ...]:
    """A group's routes: (input_tokens, output_tokens) buckets with their req/s."""
    if not isinstance(value, list):
        raise InputError(source, where, "missing or of the wrong type")
    for k, r in enumerate(value):
        if not isinstance(r, dict):
            raise InputError(source, f"{where}[{k}]", "must be a mapping")
        _int(r.get("input_tokens"), source, f"{where}[{k}].input_tokens", "tokens")
        _int(r.get("output_tokens"), source, f"{where}[{k}].output_tokens", "tokens")
        rps = r.get("rps")
        if not isinstance(rps, (int, float)) or isinstance(rps, bool) or not 0 <= rps <= BOUNDS["rate_rps"][1]:
            raise InputError(source, f"{where}[{k}].rps", f"must be a number in [0, {BOUNDS['rate_rps'][1]:g}]")
    return tuple(value)


def gpu_ids(ids: object, source: str = "<plan>", where: str = "gpu_ids") -> str:
    """A node replica's GPU ids as CUDA_VISIBLE_DEVICES's value: non-negative integers only."""
    if not isinstance(ids, list) or not ids or \
            not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise InputError(source, where, "must be a list of GPU ids (non-negative integers)")
    return ",".join(str(i) for i in ids)


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
        model_arg(g["model"], source, f"{where}.model")
        safe_name(g["gpu"], source, f"{where}.gpu")
        _int(g["tp"], source, f"{where}.tp", "tp")
        _int(g["count"], source, f"{where}.count", "available")
        _routes(g["routes"], source, f"{where}.routes")
        spot = bool(g.get("spot"))
        quant, kv = _precision(g, source, where)
        tag = ("" if quant == "none" else f"-{quant}") + ("" if kv == "auto" else f"-kv{kv}")
        name = dns_name(f"{g['model']}-{g['gpu']}-tp{g['tp']}{tag}" + ("-spot" if spot else ""))
        if name in seen:
            raise InputError(source, where, f"two replica groups map to the name {name!r}")
        seen.add(name)
        out.append(Group(name, g["model"], g["gpu"], g["tp"], g["count"], spot, tuple(g["routes"]), quant, kv))
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
    precision: tuple[tuple[str, str], ...] = ()  # per member: (quantization, kv_cache_dtype)

    def vllm_args(self, model: str, port: int, max_len: int | None) -> list[str]:
        i = [m for m, _, _ in self.members].index(model)
        quant, kv = self.precision[i] if self.precision else ("none", "auto")
        return vllm_args(model, self.tp, port, max_len, quant, kv)

    def port(self, model: str) -> int:
        return PORT + [m for m, _, _ in self.members].index(model)


def shared_of(plan: dict, source: str = "<plan>") -> list[SharedGroup]:
    out = []
    if not isinstance(plan.get("shared") or [], list):
        raise InputError(source, "shared", "must be a list")
    for i, g in enumerate(plan.get("shared") or []):
        where = f"shared[{i}]"
        if not isinstance(g, dict) or not isinstance(g.get("models"), list):
            raise InputError(source, where, "must be a mapping with a `models` list")
        for key, typ in (("gpu", str), ("tp", int), ("count", int)):
            if not isinstance(g.get(key), typ) or isinstance(g.get(key), bool):
                raise InputError(source, f"{where}.{key}", "missing or of the wrong type")
        safe_name(g["gpu"], source, f"{where}.gpu")
        _int(g["tp"], source, f"{where}.tp", "tp")
        _int(g["count"], source, f"{where}.count", "available")
        members, precision = [], []
        for j, m in enumerate(g["models"]):
            if not isinstance(m, dict) or not isinstance(m.get("model"), str) or not isinstance(m.get("routes"), list):
                raise InputError(source, f"{where}.models[{j}]", "needs `model` and `routes`")
            model_arg(m["model"], source, f"{where}.models[{j}].model")
            mem = m.get("memory_gb_per_gpu") or 0.0
            if not isinstance(mem, (int, float)) or isinstance(mem, bool) or not 0 <= mem <= 1e5:
                raise InputError(source, f"{where}.models[{j}].memory_gb_per_gpu", "must be a number in [0, 1e5]")
            members.append((m["model"], float(mem), _routes(m["routes"], source, f"{where}.models[{j}].routes")))
            precision.append(_precision(m, source, f"{where}.models[{j}]"))
        out.append(SharedGroup(dns_name(f"shared-{i}-{g['gpu']}-tp{g['tp']}"), g["gpu"], g["tp"], g["count"],
                               tuple(members), tuple(precision)))
    return out


def check_nodes(plan: dict, shared: list[SharedGroup], source: str = "<plan>") -> None:
    """An instance plan's nodes as the exports read them: instance, region, gpu, gpus, and per
    node its replicas (model, tp, gpu_ids) and shared sets (group, models, tp, gpu_ids)."""
    nodes = plan.get("nodes") or []
    if not isinstance(nodes, list):
        raise InputError(source, "nodes", "must be a list")
    for i, nd in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(nd, dict):
            raise InputError(source, where, "must be a mapping")
        safe_name(nd.get("instance"), source, f"{where}.instance")
        safe_name(nd.get("gpu"), source, f"{where}.gpu")
        if nd.get("region") not in (None, ""):
            safe_name(nd["region"], source, f"{where}.region")
        _int(nd.get("gpus"), source, f"{where}.gpus", "gpus")
        if not isinstance(nd.get("spot", False), bool):
            raise InputError(source, f"{where}.spot", "must be true or false")
        if not isinstance(nd.get("replicas"), list):
            raise InputError(source, f"{where}.replicas", "missing or not a list")
        if not isinstance(nd.get("shared") or [], list):
            raise InputError(source, f"{where}.shared", "must be a list")
        for j, r in enumerate(nd["replicas"]):
            at = f"{where}.replicas[{j}]"
            if not isinstance(r, dict):
                raise InputError(source, at, "must be a mapping")
            model_arg(r.get("model"), source, f"{at}.model")
            _int(r.get("tp"), source, f"{at}.tp", "tp")
            gpu_ids(r.get("gpu_ids"), source, f"{at}.gpu_ids")
            _precision(r, source, at)
        for j, r in enumerate(nd.get("shared") or []):
            at = f"{where}.shared[{j}]"
            if not isinstance(r, dict):
                raise InputError(source, at, "must be a mapping")
            group = r.get("group")
            if not isinstance(group, int) or isinstance(group, bool) or not 0 <= group < len(shared):
                raise InputError(source, f"{at}.group", f"must be the index of a shared set (0..{len(shared) - 1})")
            if not isinstance(r.get("models"), list):
                raise InputError(source, f"{at}.models", "missing or not a list")
            for k, m in enumerate(r["models"]):
                safe_name(m, source, f"{at}.models[{k}]")
            _int(r.get("tp"), source, f"{at}.tp", "tp")
            gpu_ids(r.get("gpu_ids"), source, f"{at}.gpu_ids")


def memory_fraction(gpu: str, memory_gb: float, members: int) -> float:
    """vLLM's --gpu-memory-utilization for one co-located server: its planned memory over the GPU's."""
    from gpumix.planner.catalog import load_catalog

    spec = load_catalog().gpu(gpu)
    if spec is None or memory_gb <= 0:
        return round(0.9 / members, 3)
    return max(round(memory_gb / spec.memory_gb, 3), 0.01)


def max_model_len(groups: list[Group]) -> dict[str, int]:
    """Per model: its longest bucket (input + output) rounded up to a power of two. Without a cap vLLM
    sizes for the model's full context, which does not fit small GPUs; raise it if requests run
    longer than their bucket."""
    longest: dict[str, int] = {}
    for g in groups:
        for r in g.routes:
            longest[g.model] = max(longest.get(g.model, 1), int(r["input_tokens"]) + int(r["output_tokens"]))
    return {m: 1 << (n - 1).bit_length() for m, n in longest.items()}


# gpumix quantization -> vLLM's --quantization. int8 (W8A8) checkpoints are llm-compressor's
# compressed-tensors format, which vLLM has no online int8 mode for. fp8 on an unquantized
# checkpoint is vLLM's online (dynamic) FP8; a pre-quantized compressed-tensors FP8 checkpoint
# needs `compressed-tensors` instead (docs/formats.md, "Precision in exports").
VLLM_QUANTIZATION = {"fp8": "fp8", "int8": "compressed-tensors", "awq": "awq", "gptq": "gptq"}


def vllm_args(model: str, tp: int, port: int, max_len: int | None, quantization: str = "none",
              kv_cache_dtype: str = "auto") -> list[str]:
    args = [hf_id(model) or model, "--served-model-name", model, "--tensor-parallel-size", str(tp),
            "--port", str(port)]
    if max_len:
        args += ["--max-model-len", str(max_len)]
    if quantization != "none":
        args += ["--quantization", VLLM_QUANTIZATION[quantization]]
    if kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", kv_cache_dtype]
    return args


def model_notes(models) -> list[str]:
    """A note per model outside the catalog (its name then stands in for the Hugging Face id)."""
    return [f"{shown(m)}: not in the model catalog; the name stands in for its Hugging Face id, replace it"
            for m in sorted({m for m in models if hf_id(m) is None})]


def model_comment(models) -> str:
    return "".join(comment(n) for n in model_notes(models))


def node_models(nd: dict) -> list[str]:
    return [r["model"] for r in nd["replicas"]] + [m for r in nd.get("shared") or () for m in r["models"]]


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


@dataclass(frozen=True)
class ScheduledGroup:
    """One replica group of a plan with periods: its group (count = its most replicas in any period,
    routes from every period, for max_model_len) and its replicas per period."""

    group: Group
    counts: tuple[int, ...]  # period -> replicas (0: not running)

    @property
    def low(self) -> int:
        return min(self.counts)

    @property
    def high(self) -> int:
        return max(self.counts)


def scheduled_groups(plan: dict, source: str = "<plan>") -> list[ScheduledGroup]:
    """The groups of a plan's `periods`, validated as groups_of validates one state, each with its
    replica count per period (InputError names the field)."""
    periods = plan.get("periods")
    if not isinstance(periods, list) or not periods:
        raise InputError(source, "periods", "must be a non-empty list")
    by_name: dict[str, list] = {}
    for t, entry in enumerate(periods):
        if not isinstance(entry, dict) or entry.get("index") != t:
            raise InputError(source, f"periods[{t}]", "must be a mapping with `index` " + str(t))
        try:
            groups = groups_of({"replicas": entry.get("replicas"), "shared": True}, source)
        except InputError as e:
            raise InputError(source, f"periods[{t}].{e.field}", e.message) from None
        for g in groups:
            by_name.setdefault(g.name, [None] * len(periods))[t] = g
    out = []
    for name in sorted(by_name):
        per = by_name[name]
        counts = tuple(g.count if g is not None else 0 for g in per)
        first = next(g for g in per if g is not None)
        routes = tuple(r for g in per if g is not None for r in g.routes)
        out.append(ScheduledGroup(Group(name, first.model, first.gpu, first.tp, max(counts), first.spot, routes,
                                        first.quantization, first.kv_cache_dtype), counts))
    return out
