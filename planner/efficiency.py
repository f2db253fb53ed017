"""Efficiency files: the roofline's efficiency factors per GPU type, bundled and the user's own.

The bundled file (data/efficiency.json) is read by load_catalog. A user file, given with
`--efficiency FILE` to plan, estimate, sweep and check (and written by `gpumix profile calibrate
--out FILE` or `gpumix profile run --calibrate FILE`), is laid over it:

  {"schema_version": 1,
   "defaults": {factor: value},                       over the bundled defaults
   "gpus": {name: {factor: value, "spec": {...}}},    over the defaults for that GPU type
   "calibrations": {name: {...}}}                     provenance; the planner does not read it

For one GPU type: bundled defaults < file defaults < bundled gpus[name] < file gpus[name].
A `spec` (memory_gb, memory_bandwidth_gbps, bf16_tflops, ...) adds a GPU type the catalog lacks
(a CPU, a new GPU), so the roofline can estimate for it; a catalog GPU keeps the catalog's spec.

Nothing here writes inside the installed package: `inside_package` is what writers ask first.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpumix.data import DATA_DIR
from gpumix.planner.catalog import Catalog, GpuSpec
from gpumix.planner.errors import InputError
from gpumix.planner.precision import ARCHS
from gpumix.planner.reading import name_problem, quote, read_json

# factor -> (lowest, highest) value a file may give: physical limits, not fitting ranges
BOUNDS: dict[str, tuple[float, float]] = {
    "prefill_mfu": (1e-3, 0.85), "decode_mfu": (1e-3, 0.85), "decode_mbu": (1e-3, 0.95),
    "comm_efficiency": (1e-3, 1.0), "allreduce_latency_us": (0.0, 1e5),
    "step_overhead_ms": (0.0, 1e3), "memory_utilization": (0.05, 1.0), "reserve_gb": (0.0, 1e3),
    "max_batch": (1, 1e6), "dtype_bytes": (1, 4), "kv_dtype_bytes": (1, 4)}
INTEGER_FACTORS = ("max_batch", "dtype_bytes", "kv_dtype_bytes")
TOP_KEYS = ("schema_version", "note", "defaults", "gpus", "calibrations")

# spec field -> (required, default): what a GPU type outside the catalog must say about itself
SPEC_FIELDS: dict[str, tuple[bool, float | None]] = {
    "memory_gb": (True, None), "memory_bandwidth_gbps": (True, None), "bf16_tflops": (True, None),
    "fp8_tflops": (False, None),  # FP8 tensor rate: fp8 W8A8 runs at it where `arch` has FP8 units
    "int8_tops": (False, None),  # INT8 tensor rate (int8 W8A8)
    "interconnect_gbps": (False, 32.0),  # PCIe 4.0 x16, one direction
    "gpus_per_node": (False, 1)}


@dataclass(frozen=True)
class EfficiencyFile:
    """A validated user efficiency file."""

    path: str
    defaults: dict = field(default_factory=dict)  # factor -> value
    gpus: dict = field(default_factory=dict)  # GPU name -> {factor: value}
    specs: dict = field(default_factory=dict)  # GPU name -> GpuSpec, types outside the catalog


def inside_package(path: Path | str) -> bool:
    """True when `path` would land in the installed package (lost on upgrade, often read-only).

    In a source checkout the repository root is the package directory (pyproject maps gpumix to
    `.`), so there only data/ counts; in an installed package every path below it does.
    """
    target, package = Path(os.path.realpath(path)), DATA_DIR.parent.resolve()  # realpath: a symlink loop is no error here
    if target.is_relative_to(DATA_DIR.resolve()):
        return True
    return target.is_relative_to(package) and not (package / "pyproject.toml").exists()


def refuse_package_path(path: Path | str, option: str) -> None:
    if inside_package(path):
        raise InputError(str(path), option, "is inside the installed gpumix package; write your own "
                         "efficiency file elsewhere and pass it with --efficiency")


def _number(path: str, where: str, value, lo: float, hi: float, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(path, where, f"must be a finite number, got {quote(value)}")
    if integer and float(value) != int(value):
        raise InputError(path, where, f"must be an integer, got {quote(value)}")
    if not lo <= value <= hi:
        raise InputError(path, where, f"must be in [{lo:g}, {hi:g}], got {quote(value)}")
    return int(value) if integer else float(value)


def read_factors(path: str, where: str, raw, allow_spec: bool = False) -> tuple[dict, dict | None]:
    """(factors, spec mapping or None) of one `defaults` or `gpus.<name>` block."""
    if not isinstance(raw, dict):
        raise InputError(path, where, "must be a mapping of factor name to value")
    factors, spec = {}, None
    for k, v in raw.items():
        if k == "spec" and allow_spec:
            spec = v
        elif k not in BOUNDS:
            raise InputError(path, f"{where}.{k}", "unknown factor (expected one of "
                             + ", ".join(BOUNDS) + (", spec" if allow_spec else "") + ")")
        else:
            factors[k] = _number(path, f"{where}.{k}", v, *BOUNDS[k], integer=k in INTEGER_FACTORS)
    return factors, spec


def read_spec(path: str, where: str, name: str, raw) -> GpuSpec:
    if not isinstance(raw, dict):
        raise InputError(path, where, "must be a mapping (memory_gb, memory_bandwidth_gbps, bf16_tflops, ...)")
    unknown = set(raw) - set(SPEC_FIELDS) - {"arch"}
    if unknown:
        raise InputError(path, f"{where}.{sorted(unknown)[0]}", "unknown spec field (expected "
                         + ", ".join([*SPEC_FIELDS, "arch"]) + ")")
    arch = raw.get("arch") or ""
    if arch and (not isinstance(arch, str) or arch not in ARCHS):  # which quantized kernels run (planner/precision.py)
        raise InputError(path, f"{where}.arch", f"must be one of {', '.join(ARCHS)}, got {quote(arch)}")
    values = {}
    for k, (required, default) in SPEC_FIELDS.items():
        if raw.get(k) is None:
            if required:
                raise InputError(path, f"{where}.{k}", "missing")
            values[k] = default
            continue
        values[k] = _number(path, f"{where}.{k}", raw[k], 1 if k == "gpus_per_node" else 1e-6,
                            1e6, integer=k == "gpus_per_node")
    return GpuSpec(name=name, memory_gb=values["memory_gb"], memory_bandwidth_gbps=values["memory_bandwidth_gbps"],
                   bf16_tflops=values["bf16_tflops"], interconnect_gbps=values["interconnect_gbps"],
                   gpus_per_node=values["gpus_per_node"], interconnect="measured spec (efficiency file)",
                   arch=arch, fp8_tflops=values["fp8_tflops"], int8_tops=values["int8_tops"])


def spec_dict(spec: GpuSpec) -> dict:
    """The `spec` block written for a GPU type outside the catalog."""
    d = asdict(spec)
    out = {k: round(d[k], 6) if isinstance(d[k], float) else d[k] for k in SPEC_FIELDS if d.get(k) is not None}
    return {**out, "arch": spec.arch} if spec.arch else out


def read_document(path: Path | str) -> dict:
    return read_json(path, "efficiency")


def parse_efficiency(doc, path: str, catalog: Catalog) -> EfficiencyFile:
    """Validate a parsed efficiency document against the schema and BOUNDS."""
    if not isinstance(doc, dict):
        raise InputError(path, "", "an efficiency file is a JSON object (schema_version, defaults, gpus)")
    unknown = set(doc) - set(TOP_KEYS)
    if unknown:
        raise InputError(path, sorted(unknown)[0], "unknown key (expected " + ", ".join(TOP_KEYS) + ")")
    if doc.get("schema_version", 1) != 1:
        raise InputError(path, "schema_version", f"must be 1, got {quote(doc['schema_version'])}")
    defaults, _ = read_factors(path, "defaults", doc.get("defaults") or {})
    raw_gpus = doc.get("gpus") or {}
    if not isinstance(raw_gpus, dict):
        raise InputError(path, "gpus", "must be a mapping of GPU name to factors")
    gpus, specs = {}, {}
    for name, raw in raw_gpus.items():
        if name_problem(name):
            raise InputError(path, "gpus", f"GPU name {quote(name)} {name_problem(name)}")
        factors, spec = read_factors(path, f"gpus.{name}", raw, allow_spec=True)
        known = catalog.gpu(name)
        if spec is not None:
            if known is not None:
                raise InputError(path, f"gpus.{name}.spec", f"{name} is in the GPU catalog, whose spec "
                                 "is used; drop the spec or name the device differently")
            specs[name] = read_spec(path, f"gpus.{name}.spec", name, spec)
        gpus[known.name if known else name] = factors
    if "calibrations" in doc and not isinstance(doc["calibrations"], dict):
        raise InputError(path, "calibrations", "must be a mapping of GPU name to provenance")
    return EfficiencyFile(path, defaults, gpus, specs)


def load_efficiency(path: Path | str, catalog: Catalog) -> EfficiencyFile:
    return parse_efficiency(read_document(path), str(path), catalog)


def with_efficiency(catalog: Catalog, path: Path | str | None) -> Catalog:
    """The catalog with a user efficiency file laid over its bundled factors (None: unchanged)."""
    if path is None:
        return catalog
    f = load_efficiency(path, catalog)
    bundled = catalog.efficiency
    gpus = {k: dict(v) for k, v in bundled.get("gpus", {}).items()}
    for name, factors in f.gpus.items():
        gpus[name] = {**gpus.get(name, {}), **factors}
    merged = {**bundled, "defaults": {**bundled.get("defaults", {}), **f.defaults}, "gpus": gpus}
    return catalog.with_gpus(f.specs).with_factors(merged)
