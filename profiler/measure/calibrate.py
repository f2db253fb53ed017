"""Calibration: fit the roofline's efficiency factors for one GPU type to measured step times.

The roofline (planner/roofline.py) predicts prefill and decode step times from a model shape,
a GPU spec and a few efficiency factors. Measurements of some models on that GPU pin the factors
down; written to a user efficiency file (planner/efficiency.py, `plan --efficiency FILE`), they
are meant to improve the estimates for the models and TP degrees that were not measured.

Design note. The roofline is a coarse model (a CPU or a small model is not a roofline), so a free
fit lets factors absorb the measured model's quirks and carry them to other models: fitted on one
model, an earlier version made a different model's error worse in half of the cross-tests. So:

  F  fitted   only the factors the samples can identify: a factor is fitted when at least
              MIN_INFORMATIVE samples have |d log t / d log factor| >= SENSITIVITY, at the starting
              factors or at the free fit below (no TP > 1 samples: no all-reduce latency; no
              compute-bound samples: no MFU). The rest keep their starting value.
  B  bounded  the physical ranges of FIT_BOUNDS (MBU <= 0.95, MFU <= 0.85, overhead 0.01..100 ms).
  R  ridge    in log space toward the starting factors:
                 loss(theta) = sum_i r_i^2 + PRIOR_SAMPLES * s^2 * sum_k ((theta_k - theta0_k) / PRIOR_SD[k])^2
              with r_i = log(predicted_i / measured_i), theta = log(factors) and s^2 the mean r^2
              of a free fit (no prior, same bounds; at least NOISE_FLOOR). The prior weighs as much
              as PRIOR_SAMPLES samples that miss by the roofline's typical error s: where the
              roofline fits the samples poorly, a few samples move a factor little and dozens move
              it most of the way; where it fits them exactly (synthetic samples) the data's factors
              are recovered.

Minimised by coordinate descent on a shrinking grid in log space (five parameters, a few hundred
samples: well under a second, no scipy); the roofs are max()es, so the loss is not convex and the
fits start from several points (OVERHEAD_STARTS_MS, and the ridge fit also from the free fit).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from gpumix.planner import reading
from gpumix.planner.catalog import GpuSpec, ModelShape
from gpumix.planner.efficiency import parse_efficiency, read_document, refuse_package_path, spec_dict
from gpumix.planner.roofline import Efficiency, decode_step_s, prefill_s
from gpumix.profiler.measure.fit import Sample

FIT_BOUNDS = {"decode_mbu": (0.01, 0.95), "prefill_mfu": (0.005, 0.85), "decode_mfu": (0.005, 0.85),
              "step_overhead_ms": (0.01, 100.0), "allreduce_latency_us": (0.1, 1e4)}
BOUNDS = FIT_BOUNDS  # the name earlier callers used
PRIOR_SD = {"decode_mbu": 0.5, "prefill_mfu": 0.5, "decode_mfu": 0.5,  # log units: about x1.6
            "step_overhead_ms": 1.0, "allreduce_latency_us": 1.0}  # about x2.7: these vary more by device
MIN_INFORMATIVE = 3  # samples a factor must shape to be fitted
OVERHEAD_STARTS_MS = (0.1, 10.0)  # extra starts of the free fit, beside the given factors
SENSITIVITY = 0.1  # |d log t / d log factor| at which a sample shapes a factor
PRIOR_SAMPLES = 4  # the prior weighs as much as this many samples (R)
NOISE_FLOOR = 0.05 ** 2  # s^2's floor, about 5% timing noise: unidentified directions stay at the start


@dataclass(frozen=True)
class Measured:
    """Step times of one model shape at one TP degree, measured in one dtype."""

    shape: ModelShape
    tp: int
    dtype_bytes: int
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Calibration:
    gpu: str
    factors: dict  # the fitted Efficiency fields (only those in `fitted`)
    error_before: float  # median |predicted / measured - 1| with the starting factors
    error_after: float
    samples: int
    worst_before: float = 0.0  # max |predicted / measured - 1|
    worst_after: float = 0.0
    fitted: tuple[str, ...] = ()
    held: dict | None = None  # factor -> why it kept its starting value
    ridge: float = 0.0  # s^2 of R: the free fit's mean squared log error (at least NOISE_FLOOR)

    def to_dict(self) -> dict:
        return asdict(self)


def predict_s(m: Measured, gpu: GpuSpec, eff: Efficiency, s: Sample) -> float:
    eff = replace(eff, dtype_bytes=m.dtype_bytes, kv_dtype_bytes=m.dtype_bytes)
    if s.kind == "prefill":
        return prefill_s(m.shape, gpu, m.tp, s.tokens, eff)
    return decode_step_s(m.shape, gpu, m.tp, s.batch, s.tokens, eff)


def log_errors(runs: Sequence[Measured], gpu: GpuSpec, eff: Efficiency) -> np.ndarray:
    return np.array([math.log(predict_s(m, gpu, eff, s) / (s.ms * 1e-3)) for m in runs for s in m.samples])


def median_error(runs: Sequence[Measured], gpu: GpuSpec, eff: Efficiency) -> float:
    return float(np.median(np.abs(np.expm1(log_errors(runs, gpu, eff)))))


def worst_error(runs: Sequence[Measured], gpu: GpuSpec, eff: Efficiency) -> float:
    return float(np.max(np.abs(np.expm1(log_errors(runs, gpu, eff)))))


def informative(runs: Sequence[Measured], gpu: GpuSpec, eff: Efficiency) -> dict[str, str]:
    """Factor -> why the samples cannot identify it ('' when they can)  (F)."""
    base = log_errors(runs, gpu, eff)
    why = {}
    for k in FIT_BOUNDS:
        if k not in candidates(runs):
            why[k] = "no TP > 1 samples"
            continue
        step = 0.05
        bumped = log_errors(runs, gpu, replace(eff, **{k: getattr(eff, k) * math.exp(step)}))
        shaped = int(np.sum(np.abs(bumped - base) / step >= SENSITIVITY))
        why[k] = "" if shaped >= MIN_INFORMATIVE else f"shapes {shaped} sample(s) (< {MIN_INFORMATIVE})"
    return why


def descend(loss, eff: Efficiency, names: Sequence[str], passes: int = 8,
            bounds: dict[str, tuple[float, float]] = FIT_BOUNDS) -> Efficiency:
    """Coordinate descent in log space within `bounds` (B)."""
    span, best = math.log(4.0), loss(eff)
    for _ in range(passes):
        for k in names:
            lo, hi = (math.log(v) for v in bounds[k])
            cur = min(max(math.log(getattr(eff, k)), lo), hi)
            for t in np.clip(cur + span * np.linspace(-1, 1, 21), lo, hi):
                cand = replace(eff, **{k: float(math.exp(t))})
                c = loss(cand)
                if c < best:
                    eff, best = cand, c
        span = max(span * 0.6, 0.01)
    return eff


def candidates(runs: Sequence[Measured]) -> list[str]:
    """The factors the runs' TP degrees let a fit touch at all."""
    return [k for k in FIT_BOUNDS if k != "allreduce_latency_us" or any(m.tp > 1 for m in runs)]


def calibrate(runs: Sequence[Measured], gpu: GpuSpec, start: Efficiency = Efficiency(),
              passes: int = 8) -> Calibration:
    """F, B, R of the module docstring: a free fit within FIT_BOUNDS shows where the data lead
    and how well the roofline fits them at best (s^2); the factors the samples shape at the
    start or at the free fit are then refitted with the ridge."""
    if not any(m.samples for m in runs):
        raise ValueError("no measurements to calibrate from")
    start = replace(start, **{k: min(max(getattr(start, k), lo), hi) for k, (lo, hi) in FIT_BOUNDS.items()})
    theta0 = {k: math.log(getattr(start, k)) for k in FIT_BOUNDS}

    def data(eff: Efficiency) -> float:
        return float(np.mean(log_errors(runs, gpu, eff) ** 2))

    # the max() roofs make the loss non-convex (weights vs overhead trade off): a few starts
    starts = [start] + [replace(start, step_overhead_ms=v) for v in OVERHEAD_STARTS_MS]
    free = min((descend(data, e, candidates(runs), passes) for e in starts), key=data)
    ridge = max(data(free), NOISE_FLOOR)
    at_start, at_free = informative(runs, gpu, start), informative(runs, gpu, free)
    why = {k: at_start[k] and at_free[k] for k in FIT_BOUNDS}  # '' when identified at either point
    names = [k for k in FIT_BOUNDS if not why[k]]

    n = sum(len(m.samples) for m in runs)

    def loss(eff: Efficiency) -> float:
        prior = sum(((math.log(getattr(eff, k)) - theta0[k]) / PRIOR_SD[k]) ** 2 for k in names)
        return n * data(eff) + PRIOR_SAMPLES * ridge * prior

    tries = [descend(loss, e, names, passes) for e in (start, replace(free, **{
        k: getattr(start, k) for k in FIT_BOUNDS if k not in names}))]
    eff = min(tries, key=loss)
    return Calibration(gpu.name, {k: getattr(eff, k) for k in names}, median_error(runs, gpu, start),
                       median_error(runs, gpu, eff), sum(len(m.samples) for m in runs),
                       worst_error(runs, gpu, start), worst_error(runs, gpu, eff), tuple(names),
                       {k: v for k, v in why.items() if v}, ridge)


# --- the user's efficiency file -------------------------------------------------------------------

def read_user_file(path: Path) -> dict:
    """The efficiency file to merge into ({} when there is none yet), validated."""
    from gpumix.planner.catalog import load_catalog

    if not reading.exists(path):
        return {"schema_version": 1, "defaults": {}, "gpus": {}}
    doc = read_document(path)
    parse_efficiency(doc, str(path), load_catalog())  # refuse to merge into a bad file
    return doc


def write_efficiency(path: Path | str, record: dict, provenance: dict, base: Path | str | None = None,
                     option: str = "--out") -> dict:
    """Merge a calibration record into a user efficiency file: the fitted factors (and, for a GPU
    type outside the catalog, its spec) under `gpus.<gpu>`, provenance under `calibrations.<gpu>`.
    `base` is the file merged from (default: `path` itself). Returns the `gpus` entry."""
    path = Path(path)
    refuse_package_path(path, option)
    doc = read_user_file(Path(base) if base is not None else path)
    gpu = record["gpu"]
    entry = {**doc.setdefault("gpus", {}).get(gpu, {}), **{k: round(v, 6) for k, v in record["factors"].items()}}
    if record.get("spec") and not record.get("catalog_spec", True):
        entry["spec"] = spec_dict(GpuSpec(**{**record["spec"], "aliases": ()}))
    doc["gpus"][gpu] = entry
    doc.setdefault("calibrations", {})[gpu] = {
        **provenance,
        **{k: record[k] for k in ("samples", "fitted", "held", "ridge") if k in record},
        **{k: round(record[k], 4) for k in ("median_error_before", "median_error_after",
                                            "worst_error_before", "worst_error_after") if k in record}}
    from gpumix.planner.plan import write_atomic

    write_atomic(path, json.dumps(doc, indent=2) + "\n")
    return entry


def write_calibration_record(path: Path, calibration: dict, prov: dict, base: Path | None = None,
                             option: str = "--calibrate", extra: dict | None = None) -> dict:
    """A calibration record (as `gpumix profile` stores it) into a user efficiency file."""
    provenance = {k: prov.get(k) for k in ("device_name", "torch", "dtype", "date")}
    return write_efficiency(path, calibration, {**provenance, **(extra or {})}, base, option)


def record(c: Calibration, spec: GpuSpec, catalog_spec: bool, models: Sequence[str]) -> dict:
    """The calibration record a profile file stores under `calibration.<gpu>`."""
    return {"gpu": c.gpu, "factors": c.factors, "median_error_before": c.error_before,
            "median_error_after": c.error_after, "worst_error_before": c.worst_before,
            "worst_error_after": c.worst_after, "samples": c.samples, "fitted": list(c.fitted),
            "held": c.held or {}, "ridge": c.ridge, "models": sorted(set(models)),
            "spec": asdict(spec), "catalog_spec": catalog_spec}

