"""Workload files (JSON or YAML): models with request rates, SLOs and request buckets; GPU offers.

Validated at the boundary: every problem raises InputError naming the file and the field, so the
CLI prints one line and exits 2. Inside gpumix the records are trusted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gpumix.planner.catalog import Catalog, GpuSpec, ModelShape, load_config_file, norm_name
from gpumix.planner.shapes import context_problem
from gpumix.planner import reading
from gpumix.planner.errors import InputError
from gpumix.planner.reading import bounds_text, in_bounds, name_problem, quote
from gpumix.planner.precision import DEFAULT_GROUP_SIZE, FOUR_BIT, KV_CACHE_DTYPES, QUANTIZATIONS, Precision

SHARE_TOLERANCE = 1e-3
DEFAULT_TP = (1, 2, 4, 8)
DEFAULT_MAX_UTILIZATION = 0.9


@dataclass(frozen=True)
class Bucket:
    input_tokens: int
    output_tokens: int
    share: float

    @property
    def key(self) -> tuple[int, int]:
        return (self.input_tokens, self.output_tokens)


@dataclass(frozen=True)
class SLO:
    ttft_ms: float
    tpot_ms: float


@dataclass(frozen=True)
class ModelDemand:
    name: str
    rate_rps: float
    slo: SLO
    buckets: tuple[Bucket, ...]
    shape: ModelShape | None  # None: only a throughput table can size it
    tp: tuple[int, ...] | None = None  # allowed TP degrees; None = workload default
    gpus: tuple[str, ...] | None = None  # allowed GPU types; None = all offered
    # precisions it may be served at; more than one makes precision a decision of the solver
    precisions: tuple[Precision, ...] = (Precision(),)

    def demand(self, bucket: Bucket) -> float:
        return self.rate_rps * bucket.share


@dataclass(frozen=True)
class GpuOffer:
    name: str
    price_per_hour: float
    available: int | None  # GPUs of this type; None = unlimited
    spec: GpuSpec | None  # None: a GPU known only from a throughput table
    price_source: str = ""  # where price_per_hour comes from (the plan's gpus[].price_source)


@dataclass(frozen=True)
class Workload:
    models: tuple[ModelDemand, ...]
    gpus: tuple[GpuOffer, ...] | None  # None: every catalog GPU at its catalog price
    max_utilization: float
    tp_degrees: tuple[int, ...]
    path: str
    instances: tuple | None = None  # planner.instances.InstanceType; None: rent loose GPUs


class _Reader:
    """Typed field access that reports `file: field.path: problem`."""

    def __init__(self, path: str):
        self.path = path

    def fail(self, field: str, message: str):
        raise InputError(self.path, field, message)

    def get(self, obj: dict, key: str, where: str, required: bool = True):
        if not isinstance(obj, dict):
            self.fail(where, "must be a mapping")
        if key not in obj or obj[key] is None:
            if required:
                self.fail(f"{where}.{key}" if where else key, "missing")
            return None
        return obj[key]

    def number(self, obj, key, where, required=True, positive=True, minimum=None, bound=None):
        """A finite number; > 0 when `positive`, >= minimum, and inside reading.BOUNDS[bound]."""
        value = self.get(obj, key, where, required)
        if value is None:
            return None
        name = f"{where}.{key}" if where else key
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(name, f"must be a number, got {quote(value)}")
        if positive and value <= 0:
            self.fail(name, f"must be > 0, got {quote(value)}")
        if minimum is not None and value < minimum:
            self.fail(name, f"must be >= {minimum}, got {quote(value)}")
        if bound is not None and not in_bounds(value, bound) and not (value == 0 and not positive):
            self.fail(name, f"must be in {bounds_text(bound)}, got {quote(value)}")
        return value

    def integer(self, obj, key, where, required=True, minimum=1, bound=None):
        value = self.get(obj, key, where, required)
        if value is None:
            return None
        name = f"{where}.{key}" if where else key
        if isinstance(value, bool) or not isinstance(value, int) and not (
            isinstance(value, float) and value.is_integer()
        ):
            self.fail(name, f"must be an integer, got {quote(value)}")
        if value < minimum:
            self.fail(name, f"must be >= {minimum}, got {quote(value)}")
        if bound is not None and not in_bounds(value, bound):
            self.fail(name, f"must be an integer in {bounds_text(bound)}, got {quote(value)}")
        return int(value)

    def int_list(self, obj, key, where, bound="tp"):
        value = self.get(obj, key, where, required=False)
        if value is None:
            return None
        name = f"{where}.{key}" if where else key
        if not isinstance(value, list) or not value:
            self.fail(name, "must be a non-empty list of integers")
        out = []
        for j, v in enumerate(value):
            if isinstance(v, bool) or not isinstance(v, int) or not in_bounds(v, bound):
                self.fail(f"{name}[{j}]", f"must be an integer in {bounds_text(bound)}, got {quote(v)}")
            out.append(v)
        return tuple(sorted(set(out)))

    def name(self, obj, key, where) -> str:
        """A model or GPU name: reading.name_problem's character set."""
        value = self.get(obj, key, where)
        problem = name_problem(value)
        if problem:
            self.fail(f"{where}.{key}" if where else key, f"{problem}, got {quote(value)}")
        return value


def read_structured(path: Path | str, kind: str = "file") -> object:
    """Parse a JSON or YAML file within the limits of planner/reading.py; one-line InputError on failure."""
    return reading.read_structured(path, kind)


def load_workload(path: Path | str, catalog: Catalog, need_shapes: bool = True,
                  instance_catalog: tuple | None = None) -> Workload:
    """Read and validate a workload. need_shapes=False lets unknown models through (profiles size them).
    instance_catalog (--catalog) replaces the bundled instances; without `instances` it offers all."""
    path = Path(path)
    return load_workload_doc(read_structured(path, "workload"), catalog, need_shapes, path, instance_catalog)


def load_workload_doc(doc: object, catalog: Catalog, need_shapes: bool = True,
                      path: Path | str = "<workload>", instance_catalog: tuple | None = None) -> Workload:
    """Validate an already parsed workload document (relative config paths resolve against `path`)."""
    path = Path(path)
    r = _Reader(str(path))
    if not isinstance(doc, dict):
        r.fail("", "the workload must be a mapping with a `models` list")
    unknown = set(doc) - {"models", "gpus", "max_utilization", "tp_degrees", "name", "description", "instances"}
    if unknown:
        r.fail(sorted(unknown)[0], "unknown key (expected models, gpus, max_utilization, tp_degrees, instances)")

    max_util = r.number(doc, "max_utilization", "", required=False)
    if max_util is None:
        max_util = DEFAULT_MAX_UTILIZATION
    elif max_util > 1:
        r.fail("max_utilization", f"must be in (0, 1], got {quote(max_util)}")
    tp_degrees = r.int_list(doc, "tp_degrees", "") or DEFAULT_TP

    raw_models = r.get(doc, "models", "")
    if not isinstance(raw_models, list) or not raw_models:
        r.fail("models", "must be a non-empty list")
    models: list[ModelDemand] = []
    seen: set[str] = set()
    for i, m in enumerate(raw_models):
        models.append(_read_model(r, m, f"models[{i}]", path, catalog, need_shapes))
        if models[-1].name in seen:
            r.fail(f"models[{i}].name", f"duplicate model {quote(models[-1].name)}")
        seen.add(models[-1].name)

    gpus = None
    raw_gpus = r.get(doc, "gpus", "", required=False)
    if raw_gpus is not None:
        if not isinstance(raw_gpus, list) or not raw_gpus:
            r.fail("gpus", "must be a non-empty list")
        gpus = tuple(_read_gpu(r, g, f"gpus[{i}]", catalog, need_shapes) for i, g in enumerate(raw_gpus))
        names: set[str] = set()
        for i, g in enumerate(gpus):
            if g.name in names:
                r.fail(f"gpus[{i}].name", f"duplicate GPU type {quote(g.name)}")
            names.add(g.name)
    instances = None
    if doc.get("instances") is not None or instance_catalog is not None:
        from gpumix.planner.instances import read_instances
        raw = doc["instances"] if doc.get("instances") is not None else "catalog"
        instances = read_instances(raw, str(path), catalog, need_shapes, instance_catalog)
    return Workload(tuple(models), gpus, float(max_util), tp_degrees, str(path), instances)


def _read_model(r: _Reader, m, where: str, path: Path, catalog: Catalog, need_shapes: bool) -> ModelDemand:
    name = r.name(m, "name", where)
    rate = r.number(m, "rate_rps", where, bound="rate_rps")
    slo_raw = r.get(m, "slo", where)
    slo = SLO(
        ttft_ms=float(r.number(slo_raw, "ttft_ms", f"{where}.slo", bound="slo_ms")),
        tpot_ms=float(r.number(slo_raw, "tpot_ms", f"{where}.slo", bound="slo_ms")),
    )
    raw_buckets = r.get(m, "buckets", where)
    if not isinstance(raw_buckets, list) or not raw_buckets:
        r.fail(f"{where}.buckets", "must be a non-empty list")
    buckets = []
    keys: set[tuple[int, int]] = set()  # a set: 20,000 buckets stay linear
    for j, b in enumerate(raw_buckets):
        bw = f"{where}.buckets[{j}]"
        buckets.append(Bucket(
            input_tokens=r.integer(b, "input_tokens", bw, bound="tokens"),
            output_tokens=r.integer(b, "output_tokens", bw, bound="tokens"),
            share=float(r.number(b, "share", bw, bound="share")),
        ))
        if buckets[-1].key in keys:
            r.fail(bw, f"duplicate bucket {buckets[-1].key}")
        keys.add(buckets[-1].key)
    total = sum(b.share for b in buckets)
    if abs(total - 1.0) > SHARE_TOLERANCE:
        r.fail(f"{where}.buckets", f"shares sum to {total:g}, must sum to 1")
    buckets = [Bucket(b.input_tokens, b.output_tokens, b.share / total) for b in buckets]

    config = r.get(m, "config", where, required=False)
    if config is not None:
        if not isinstance(config, str):
            r.fail(f"{where}.config", "must be a path to a config.json")
        cfg_path = Path(config) if Path(config).is_absolute() else path.parent / config
        shape = load_config_file(cfg_path, name, f"{where}.config", str(path))
    else:
        shape = catalog.model(name)
        if shape is None and need_shapes:
            r.fail(f"{where}.name", f"unknown model {quote(name)}: not in the model catalog "
                   "(add `config: path/to/config.json`, or plan with --profiles)")
    for j, b in enumerate(buckets):  # within the model's context (planner/shapes.py context_problem)
        if (bad := context_problem(shape, b.input_tokens, b.output_tokens)) is not None:
            r.fail(f"{where}.buckets[{j}].{bad[0]}", bad[1])
    gpus = r.get(m, "gpus", where, required=False)
    if gpus is not None and not isinstance(gpus, list):
        r.fail(f"{where}.gpus", "must be a list of GPU type names")
    for j, g in enumerate(gpus or []):
        if name_problem(g):
            r.fail(f"{where}.gpus[{j}]", f"{name_problem(g)}, got {quote(g)}")
    return ModelDemand(
        name=name.strip(),
        rate_rps=float(rate),
        slo=slo,
        buckets=tuple(buckets),
        shape=shape,
        tp=r.int_list(m, "tp", where),
        gpus=tuple(gpus) if gpus is not None else None,
        precisions=_read_precisions(r, m, where, shape),
    )


def _names(r: _Reader, m: dict, key: str, where: str, allowed: tuple[str, ...]) -> tuple[str, ...] | None:
    """A `quantization`/`kv_cache_dtype` value: one name or a non-empty list of names."""
    value = r.get(m, key, where, required=False)
    if value is None:
        return None
    name = f"{where}.{key}"
    items = value if isinstance(value, list) else [value]
    if not items:
        r.fail(name, f"must be one of {', '.join(allowed)} or a non-empty list of them")
    out: list[str] = []
    for j, v in enumerate(items):
        at = f"{name}[{j}]" if isinstance(value, list) else name
        text = v.strip().lower() if isinstance(v, str) else v
        if text not in allowed:
            r.fail(at, f"must be one of {', '.join(allowed)}, got {quote(v)}")
        if text not in out:
            out.append(text)
    return tuple(out)


def _read_precisions(r: _Reader, m: dict, where: str, shape: ModelShape | None) -> tuple[Precision, ...]:
    """The model's precisions: the workload's `quantization` x `kv_cache_dtype`; without the key, the
    config's quantization_config (a checkpoint's own method), else unquantized (bf16)."""
    quants = _names(r, m, "quantization", where, QUANTIZATIONS)
    kvs = _names(r, m, "kv_cache_dtype", where, KV_CACHE_DTYPES) or ("auto",)
    own = getattr(shape, "checkpoint_quant", None)
    if quants is None:
        if own is not None and own.method is None:  # a method gpumix does not model, and no override
            raise InputError(shape.source or r.path, own.field or "quantization_config.quant_method",
                             f"{own.problem} (at {where} of {r.path})")
        quants = (own.method,) if own is not None else ("none",)
    group = own.group_size if own is not None and own.group_size else DEFAULT_GROUP_SIZE
    return tuple(Precision(q, kv, group if q in FOUR_BIT and own is not None and own.method == q
                           else DEFAULT_GROUP_SIZE)
                 for q in quants for kv in kvs)


def _read_gpu(r: _Reader, g, where: str, catalog: Catalog, need_shapes: bool) -> GpuOffer:
    name = r.name(g, "name", where)
    spec = catalog.gpu(name)
    if spec is None and need_shapes:
        known = ", ".join(sorted(catalog.gpus))
        r.fail(f"{where}.name", f"unknown GPU {quote(name)} (catalog: {known})")
    price = r.number(g, "price_per_hour", where, required=spec is None or spec.price_per_hour is None,
                     bound="price_per_hour")
    source = f"workload: {where}.price_per_hour"
    if price is None:
        price, source = spec.price_per_hour, catalog_price_source(spec)
    available = r.integer(g, "available", where, required=False, minimum=0, bound="available")
    return GpuOffer(spec.name if spec else name.strip(), float(price), available, spec, source)


def catalog_price_source(spec: GpuSpec) -> str:
    """'catalog (data/gpus.json, <date>): <source>' for a catalog price."""
    date = f", {spec.price_date}" if spec.price_date else ""
    return f"catalog (data/gpus.json{date}): {spec.price_source or 'no source recorded'}"
