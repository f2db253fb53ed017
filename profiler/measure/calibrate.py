"""Calibration: fit the roofline's efficiency factors for one GPU type to measured step times.

The roofline (planner/roofline.py) predicts prefill and decode step times from a model shape,
a GPU spec and a few efficiency factors. Measurements of any model on that GPU pin the factors
down; written to the efficiency file's per-GPU entry (data/efficiency.json `gpus`), they improve
estimates for the models and TP degrees that were not measured.

Fitted: decode_mbu, prefill_mfu, decode_mfu, step_overhead_ms and, with TP > 1 measurements,
allreduce_latency_us. Objective: mean squared log ratio predicted/measured, minimised by
coordinate descent on a shrinking multiplicative grid (five parameters, a few hundred samples:
milliseconds, no scipy).
"""
from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from gpumix.planner.catalog import GpuSpec, ModelShape
from gpumix.planner.errors import InputError
from gpumix.profiler.measure.fit import Sample
from gpumix.planner.roofline import Efficiency, decode_step_s, prefill_s

BOUNDS = {"decode_mbu": (1e-3, 1.0), "prefill_mfu": (1e-3, 1.0), "decode_mfu": (1e-3, 1.0),
          "step_overhead_ms": (1e-3, 1e3), "allreduce_latency_us": (1e-2, 1e5)}


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
    factors: dict  # the fitted Efficiency fields
    error_before: float  # median |predicted / measured - 1| with the starting factors
    error_after: float
    samples: int

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


def calibrate(runs: Sequence[Measured], gpu: GpuSpec, start: Efficiency = Efficiency(),
              passes: int = 8) -> Calibration:
    if not any(m.samples for m in runs):
        raise ValueError("no measurements to calibrate from")
    names = [k for k in BOUNDS if k != "allreduce_latency_us" or any(m.tp > 1 for m in runs)]

    def loss(eff: Efficiency) -> float:
        return float(np.mean(log_errors(runs, gpu, eff) ** 2))

    eff, span = start, 4.0
    best = loss(eff)
    for _ in range(passes):
        for k in names:
            lo, hi = BOUNDS[k]
            cur = min(max(getattr(eff, k), lo), hi)
            for v in cur * span ** np.linspace(-1, 1, 21):
                cand = replace(eff, **{k: float(min(max(v, lo), hi))})
                c = loss(cand)
                if c < best:
                    eff, best = cand, c
        span = max(span ** 0.6, 1.01)
    return Calibration(gpu.name, {k: getattr(eff, k) for k in names}, median_error(runs, gpu, start),
                       median_error(runs, gpu, eff), sum(len(m.samples) for m in runs))


def write_efficiency(path: Path | str, cal: Calibration, provenance: dict) -> dict:
    """Merge fitted factors into an efficiency file's `gpus` entry (created if missing); returns it."""
    path = Path(path)
    doc: dict = {"schema_version": 1, "defaults": {}, "gpus": {}}
    if path.exists():
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(str(path), "", f"cannot read efficiency file: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("gpus", {}), dict):
            raise InputError(str(path), "gpus", "must be a mapping of GPU name to factors")
    entry = {**doc.get("gpus", {}).get(cal.gpu, {}), **{k: round(v, 6) for k, v in cal.factors.items()}}
    doc.setdefault("gpus", {})[cal.gpu] = entry
    doc.setdefault("calibrations", {})[cal.gpu] = {
        **provenance, "median_error_before": round(cal.error_before, 4),
        "median_error_after": round(cal.error_after, 4), "samples": cal.samples}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
    return entry


def write_calibration_record(path: Path, calibration: dict, prov: dict) -> None:
    """A calibration record (as merge stores it) into an efficiency file."""
    c = Calibration(calibration["gpu"], calibration["factors"], calibration["median_error_before"],
                    calibration["median_error_after"], calibration["samples"])
    write_efficiency(path, c, {k: prov.get(k) for k in ("device_name", "torch", "dtype", "date")})
