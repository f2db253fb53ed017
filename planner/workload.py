"""Workload files (JSON or YAML): models with request rates, SLOs and request buckets; GPU offers.

Validated at the boundary: every problem raises InputError naming the file and the field, so the
CLI prints one line and exits 2. Inside gpumix the records are trusted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from gpumix.planner.catalog import Catalog, GpuSpec, ModelShape, load_config_file
from gpumix.planner.shapes import context_problem
from gpumix.planner import reading
from gpumix.planner.errors import InputError
from gpumix.planner.reading import BOUNDS, bounds_text, in_bounds, name_problem, quote
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
    max_utilization: float | None = None  # this model's U, over the workload's (None: the workload's)
    # periods (docs/schedule.md): one rate per period, rate_rps their peak; None: one period
    rates: tuple[float, ...] | None = None
    start_cost_per_replica: float | None = None  # $ per replica started; None: the workload's or the default

    def demand(self, bucket: Bucket) -> float:
        return self.rate_rps * bucket.share


@dataclass(frozen=True)
class GpuOffer:
    name: str
    price_per_hour: float
    available: int | None  # GPUs of this type; None = unlimited
    spec: GpuSpec | None  # None: a GPU known only from a throughput table
    price_source: str = ""  # where price_per_hour comes from (the plan's gpus[].price_source)
    # periods: GPUs of this type in each period (None = unlimited); `available` is then their minimum
    available_per_period: tuple[int | None, ...] | None = None


@dataclass(frozen=True)
class Workload:
    models: tuple[ModelDemand, ...]
    gpus: tuple[GpuOffer, ...] | None  # None: every catalog GPU at its catalog price
    max_utilization: float
    tp_degrees: tuple[int, ...]
    path: str
    instances: tuple | None = None  # planner.instances.InstanceType; None: rent loose GPUs
    periods: Periods | None = None  # a day of per-period rates (docs/schedule.md); None: one state


@dataclass(frozen=True)
class Periods:
    """The horizon of a workload whose demand moves: `count` periods of `hours` each."""

    count: int
    hours: float = 1.0  # period_hours
    cyclic: bool = True  # the last period is followed by the first (a day that repeats)
    start_cost_per_replica: float | None = None  # $ per replica started, every model; None: the default
    timezone: str = "UTC"  # where period 0 starts at 00:00 (the exports' cron schedules)
    trace: str | None = None  # the trace CSV the rates came from, if any


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
    unknown = set(doc) - {"models", "gpus", "max_utilization", "tp_degrees", "name", "description", "instances",
                          *PERIOD_KEYS}
    if unknown:
        r.fail(sorted(unknown)[0], "unknown key (expected models, gpus, max_utilization, tp_degrees, instances, "
                                   "period_hours, trace, cyclic, start_cost_per_replica, timezone)")

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
    periods, models, gpus = _read_periods(r, doc, path, models, gpus)
    return Workload(tuple(models), gpus, float(max_util), tp_degrees, str(path), instances, periods)


def _read_model(r: _Reader, m, where: str, path: Path, catalog: Catalog, need_shapes: bool) -> ModelDemand:
    name = r.name(m, "name", where)
    rate, rates = _read_rate(r, m, where)
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
        rate_rps=float(rate or 0.0),
        slo=slo,
        buckets=tuple(buckets),
        shape=shape,
        tp=r.int_list(m, "tp", where),
        gpus=tuple(gpus) if gpus is not None else None,
        precisions=_read_precisions(r, m, where, shape),
        max_utilization=_read_utilization(r, m, where),
        rates=rates,
        start_cost_per_replica=_start_cost(r, m, where),
    )


def _read_utilization(r: _Reader, m: dict, where: str) -> float | None:
    """A model's own `max_utilization` in (0, 1] (e.g. from `gpumix simulate --find-max-utilization`)."""
    value = r.number(m, "max_utilization", where, required=False)
    if value is not None and value > 1:
        r.fail(f"{where}.max_utilization", f"must be in (0, 1], got {quote(value)}")
    return None if value is None else float(value)


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
    per_period = None
    if isinstance(g, dict) and isinstance(g.get("available"), list):  # one value per period
        per_period = tuple(_period_int(r, v, f"{where}.available[{j}]") for j, v in enumerate(g["available"]))
        if not per_period:
            r.fail(f"{where}.available", "must be an integer or a non-empty list of integers, one per period")
        available = min(per_period)
    else:
        available = r.integer(g, "available", where, required=False, minimum=0, bound="available")
    return GpuOffer(spec.name if spec else name.strip(), float(price), available, spec, source, per_period)


def catalog_price_source(spec: GpuSpec) -> str:
    """'catalog (data/gpus.json, <date>): <source>' for a catalog price."""
    date = f", {spec.price_date}" if spec.price_date else ""
    return f"catalog (data/gpus.json{date}): {spec.price_source or 'no source recorded'}"


# -- periods: demand that moves (docs/schedule.md) ------------------------------------------------

PERIOD_KEYS = ("period_hours", "trace", "cyclic", "start_cost_per_replica", "timezone")
MAX_PERIODS = 10_000
MAX_PERIOD_HOURS = 8760.0  # a year
TRACE_COLUMNS = ("time", "model", "rate_rps")


def _period_int(r: _Reader, v, field: str) -> int:
    """One period's `available`: an integer GPU count."""
    if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()) \
            or not in_bounds(v, "available"):
        r.fail(field, f"must be an integer in {bounds_text('available')}, got {quote(v)}")
    return int(v)


def _rate(r: _Reader, v, field: str) -> float:
    """One period's rate: 0 (the model is idle then) or inside the rate_rps bounds."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        r.fail(field, f"must be a number, got {quote(v)}")
    if v < 0:
        r.fail(field, f"must be >= 0, got {quote(v)}")
    if v != 0 and not in_bounds(v, "rate_rps"):
        r.fail(field, f"must be 0 or in {bounds_text('rate_rps')}, got {quote(v)}")
    return float(v)


def _read_rate(r: _Reader, m, where: str) -> tuple[float | None, tuple[float, ...] | None]:
    """(rate_rps, rates): a number (one rate, every period), or a list with one rate per period
    (rate_rps is then their peak); (None, None) when absent (a trace may give it: _read_periods)."""
    value = m.get("rate_rps") if isinstance(m, dict) else None
    if not isinstance(value, list):
        return r.number(m, "rate_rps", where, required=False, bound="rate_rps"), None
    if not value:
        r.fail(f"{where}.rate_rps", "must be a number or a non-empty list of numbers, one per period")
    rates = tuple(_rate(r, v, f"{where}.rate_rps[{j}]") for j, v in enumerate(value))
    if max(rates) < BOUNDS["rate_rps"][0]:
        r.fail(f"{where}.rate_rps", f"the peak rate must be in {bounds_text('rate_rps')}, got {quote(max(rates))}")
    return max(rates), rates


def _start_cost(r: _Reader, obj, where: str) -> float | None:
    value = r.number(obj, "start_cost_per_replica", where, required=False, positive=False, minimum=0,
                     bound="price_per_hour")
    return None if value is None else float(value)


def _read_periods(r: _Reader, doc: dict, path: Path, models: list[ModelDemand],
                  gpus: tuple[GpuOffer, ...] | None) -> tuple[Periods | None, list[ModelDemand], tuple | None]:
    """The horizon: every list (rates, available) and the trace agree on the number of periods.
    A workload without lists, trace or period keys is one state, as before (Periods None)."""
    hours = r.number(doc, "period_hours", "", required=False)
    if hours is not None and hours > MAX_PERIOD_HOURS:
        r.fail("period_hours", f"must be at most {MAX_PERIOD_HOURS:g} (a year), got {quote(hours)}")
    cyclic = doc.get("cyclic")
    if cyclic is not None and not isinstance(cyclic, bool):
        r.fail("cyclic", f"must be true or false, got {quote(cyclic)}")
    timezone = doc.get("timezone")
    if timezone is not None:
        timezone = _timezone(r, timezone)
    start_cost = _start_cost(r, doc, "")
    trace_rates, trace_path = None, None
    if doc.get("trace") is not None:
        if not isinstance(doc["trace"], str) or not doc["trace"].strip():
            r.fail("trace", "must be the path of a CSV file with columns time,model,rate_rps")
        trace_path = Path(doc["trace"]) if Path(doc["trace"]).is_absolute() else path.parent / doc["trace"]
        trace_rates = read_trace(trace_path, float(hours or 1.0), {m.name for m in models})
    lengths: list[tuple[int, str]] = []  # (periods, the field that says so)
    if trace_rates is not None:
        lengths.append((len(next(iter(trace_rates.values()))), f"trace ({trace_path})"))
    for i, m in enumerate(models):
        if m.rates is not None:
            lengths.append((len(m.rates), f"models[{i}].rate_rps"))
    for i, g in enumerate(gpus or ()):
        if g.available_per_period is not None:
            lengths.append((len(g.available_per_period), f"gpus[{i}].available"))
    for n, field in lengths[1:]:
        if n != lengths[0][0]:
            r.fail(field, f"has {n} values, {lengths[0][1]} has {lengths[0][0]}: every list needs one value "
                          "per period")
    if lengths and lengths[0][0] > MAX_PERIODS:
        r.fail(lengths[0][1], f"at most {MAX_PERIODS} periods, got {lengths[0][0]}")
    count = lengths[0][0] if lengths else None
    for i, m in enumerate(models):
        if m.rates is None and not m.rate_rps and (trace_rates is None or m.name not in trace_rates):
            r.fail(f"models[{i}].rate_rps", "missing" + (" (and the trace has no rows for this model)"
                                                         if trace_rates is not None else ""))
        if trace_rates is not None and m.name in trace_rates and (m.rates is not None or m.rate_rps):
            r.fail(f"models[{i}].rate_rps", f"the trace gives rates for {quote(m.name)}: give rate_rps or "
                                            "trace rows, not both")
    if count is None:
        extra = next((k for k in PERIOD_KEYS if doc.get(k) is not None), None)
        if extra is not None:
            r.fail(extra, "applies to workloads with periods: give rate_rps as a list (one rate per period) "
                          "or a trace")
        return None, models, gpus
    out = []
    for i, m in enumerate(models):
        rates = trace_rates.get(m.name) if trace_rates is not None else None
        rates = rates or m.rates or (m.rate_rps,) * count
        if max(rates) < BOUNDS["rate_rps"][0]:
            r.fail(f"models[{i}].rate_rps", f"the peak rate must be in {bounds_text('rate_rps')}, "
                                            f"got {quote(max(rates))}")
        out.append(replace(m, rate_rps=max(rates), rates=tuple(rates)))
    if gpus is not None:
        gpus = tuple(g if g.available_per_period is not None or g.available is None
                     else replace(g, available_per_period=(g.available,) * count) for g in gpus)
    return Periods(count, float(hours or 1.0), True if cyclic is None else cyclic, start_cost,
                   timezone or "UTC", None if trace_path is None else str(trace_path)), out, gpus


def _timezone(r: _Reader, value) -> str:
    """An IANA time zone name (the exports' cron schedules run in it)."""
    if not isinstance(value, str) or name_problem(value):
        r.fail("timezone", f"must be an IANA time zone name such as Europe/Berlin, got {quote(value)}")
    if value in ("UTC", "Etc/UTC"):
        return value
    try:
        from zoneinfo import ZoneInfo
        ZoneInfo(value)
    except (ValueError, OSError, ImportError, LookupError):
        r.fail("timezone", f"unknown time zone {quote(value)} (an IANA name such as Europe/Berlin)")
    return value


def read_trace(path: Path, period_hours: float, models: set[str]) -> dict[str, list[float]]:
    """A trace CSV (columns time,model,rate_rps; time in hours from the start of the horizon, or ISO
    8601 timestamps counted from the earliest) as one rate per period and model: each sample holds
    until the model's next one, and a period's rate is the peak of what holds within it (the sample
    in force at its start and every sample inside it). Before its first sample a model's rate is 0."""
    import csv
    import io

    text = reading.read_text(path, "file", "trace")
    rows = []
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, None)
        if header is None or [h.strip().lower() for h in header] != list(TRACE_COLUMNS):
            raise InputError(str(path), "line 1", f"the header must be {','.join(TRACE_COLUMNS)}, "
                                                  f"got {quote(','.join(header or []))}")
        for row in reader:
            if not row or all(not c.strip() for c in row):
                continue
            line = reader.line_num
            if len(row) != 3:
                raise InputError(str(path), f"line {line}", f"expected 3 columns (time,model,rate_rps), got {len(row)}")
            rows.append((line, row[0].strip(), row[1].strip(), row[2].strip()))
    except csv.Error as e:
        raise InputError(str(path), "trace", f"not a CSV file: {e}") from None
    if not rows:
        raise InputError(str(path), "trace", "has no rows (expected time,model,rate_rps lines after the header)")
    times = _trace_times(path, rows)
    samples: dict[str, list[tuple[float, float]]] = {}
    seen: set = set()
    for (line, _, model, rate_text), t in zip(rows, times):
        if model not in models:
            raise InputError(str(path), f"line {line}: model", f"{quote(model)} is not a model of the workload")
        try:
            rate = float(rate_text)
        except ValueError:
            rate = None
        if rate is None or not math.isfinite(rate) or rate < 0 or rate > BOUNDS["rate_rps"][1]:
            raise InputError(str(path), f"line {line}: rate_rps", f"must be a number in [0, "
                                                                  f"{BOUNDS['rate_rps'][1]:g}], got {quote(rate_text)}")
        if (t, model) in seen:
            raise InputError(str(path), f"line {line}", f"a second row for {quote(model)} at time {t:g}")
        seen.add((t, model))
        samples.setdefault(model, []).append((t, rate))
    end = max(times)
    count = int(end // period_hours) + 1
    if count > MAX_PERIODS:
        raise InputError(str(path), "time", f"spans {count} periods of {period_hours:g} h; at most {MAX_PERIODS}")
    out = {}
    for model, pts in samples.items():
        pts.sort()
        rates = [0.0] * count
        for j, (t, rate) in enumerate(pts):
            first = int(t // period_hours)
            if j + 1 == len(pts):  # the last sample holds to the end of the horizon
                last = count - 1
            else:  # [t, next sample) overlaps periods first..last
                last = max(first, int(math.ceil(pts[j + 1][0] / period_hours - 1e-9)) - 1)
            for p in range(first, min(last, count - 1) + 1):
                rates[p] = max(rates[p], rate)
        out[model] = rates
    return out


def _trace_times(path: Path, rows: list) -> list[float]:
    """The time column as hours from the start: numbers as given, ISO 8601 timestamps from the earliest."""
    numbers = []
    for line, t, _, _ in rows:
        try:
            numbers.append(float(t))
        except ValueError:
            numbers = None
            break
    if numbers is not None:
        for (line, t, _, _), v in zip(rows, numbers):
            if not math.isfinite(v) or v < 0:
                raise InputError(str(path), f"line {line}: time", f"must be hours >= 0, got {quote(t)}")
        return numbers
    from datetime import datetime, timezone

    stamps = []
    for line, t, _, _ in rows:
        try:
            d = datetime.fromisoformat(t)
        except ValueError:
            raise InputError(str(path), f"line {line}: time", f"must be hours from the start or an ISO 8601 "
                                                              f"timestamp, got {quote(t)}") from None
        stamps.append(d if d.tzinfo else d.replace(tzinfo=timezone.utc))
    first = min(stamps)
    return [(d - first).total_seconds() / 3600 for d in stamps]
