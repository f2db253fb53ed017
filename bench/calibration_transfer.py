"""Does a calibration transfer? Fit the roofline's efficiency factors on one measured model,
predict another model's step times, both ways; default factors vs fitted ones.

  python bench/calibration_transfer.py [--threads 1] [--dtype bf16] [--samples FILE] [--reuse]

1. Measure two differently shaped Llama-like models on the local device with the `gpumix profile`
   sweep (profiler.measure.profile): `wide` (hidden 1024, 4 layers) and `deep` (hidden 512,
   16 layers), about the same weight bytes (~110-125 MB in bf16, above the CPU's last-level cache).
   The device's spec is measured as `gpumix profile --gpu-name cpu-local` does (copy bandwidth,
   GEMM TFLOPS).
2. For each direction (fit on A, predict B): the step-time error on B with the default factors,
   with the regularized calibration (profiler/measure/calibrate.py) and with a free fit of the
   same factors in the old wide bounds (what calibration did before). Errors: median and worst
   |ln(predicted / measured)| over B's samples, and the same as % (e^x - 1).
Prints one JSON object. --samples FILE keeps the measurements (--reuse reads them back instead of
measuring), so the analysis can be rerun without the sweep.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gpumix.planner.catalog import GpuSpec, shape_from_config
from gpumix.planner.roofline import Efficiency
from gpumix.profiler.measure import calibrate as cal
from gpumix.profiler.measure.fit import Sample

MODELS = {  # config.json fields of two Llama-like shapes
    "wide": {"hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 4,
             "intermediate_size": 2816, "num_hidden_layers": 4, "vocab_size": 8192},
    "deep": {"hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 2,
             "intermediate_size": 1408, "num_hidden_layers": 16, "vocab_size": 8192},
}
PREFILL = (32, 128, 512, 1024)
BATCHES = (1, 4, 16, 32)
CONTEXTS = (128, 512)
OLD_BOUNDS = {"decode_mbu": (1e-3, 1.0), "prefill_mfu": (1e-3, 1.0), "decode_mfu": (1e-3, 1.0),
              "step_overhead_ms": (1e-3, 1e3), "allreduce_latency_us": (1e-2, 1e5)}


def measure(dtype: str, threads: int | None, rounds: int) -> dict:
    import torch

    from gpumix.profiler.measure.profile import ProfileOptions, measured_spec
    from gpumix.profiler.measure.timing import run_sweep, sweep_plan
    from gpumix.profiler.runtime.model import DTYPES, ModelArgs, build

    if threads:
        torch.set_num_threads(threads)
    dbytes = 4 if dtype == "fp32" else 2
    out = {"dtype": dtype, "threads": torch.get_num_threads(), "torch": torch.__version__, "models": {}}
    t0 = time.perf_counter()
    for name, cfg in MODELS.items():
        args = ModelArgs.from_shape(shape_from_config(cfg, name))
        shape = args.shape(name)
        plan = sweep_plan(shape, 1, dbytes, 4e9, PREFILL, BATCHES, CONTEXTS)
        samples = run_sweep(build(args, "cpu", DTYPES[dtype]), "cpu", plan, iters=3, rounds=rounds)
        out["models"][name] = {"config": cfg, "params": shape.params, "samples": [s.to_dict() for s in samples]}
    out["sweep_s"] = round(time.perf_counter() - t0, 1)
    spec = measured_spec("cpu-local", ProfileOptions(device="cpu", dtype=dtype))
    out["spec"] = asdict(spec)
    return out


def errors(runs, spec, eff) -> dict:
    x = np.abs(cal.log_errors(runs, spec, eff))
    med, worst = float(np.median(x)), float(np.max(x))
    return {"median_abs_log": round(med, 3), "worst_abs_log": round(worst, 3),
            "median_pct": round(100 * math.expm1(med), 1), "worst_pct": round(100 * math.expm1(worst), 1)}


def free_fit(runs, spec) -> Efficiency:
    """The old calibration: every factor the TP degrees allow, no prior, wide bounds."""
    names = [k for k in OLD_BOUNDS if k != "allreduce_latency_us"]

    def loss(eff):
        return float(np.mean(cal.log_errors(runs, spec, eff) ** 2))
    return cal.descend(loss, Efficiency(), names, bounds=OLD_BOUNDS)


def analyse(data: dict) -> dict:
    spec = GpuSpec(**{**data["spec"], "aliases": ()})
    runs = {}
    for name, m in data["models"].items():
        shape = shape_from_config(m["config"], name)
        runs[name] = cal.Measured(shape, 1, 4 if data["dtype"] == "fp32" else 2,
                                  tuple(Sample.from_dict(s) for s in m["samples"]))
    out = {"device": "cpu-local", "dtype": data["dtype"], "threads": data["threads"],
           "sweep_s": data["sweep_s"], "samples": {k: len(r.samples) for k, r in runs.items()},
           "spec": {"memory_bandwidth_gbps": round(spec.memory_bandwidth_gbps, 1),
                    "bf16_tflops": round(spec.bf16_tflops, 3)}, "directions": {}}
    default = Efficiency()
    for a, b in (("wide", "deep"), ("deep", "wide")):
        t0 = time.perf_counter()
        c = cal.calibrate([runs[a]], spec, default)
        fit_s = time.perf_counter() - t0
        fitted = Efficiency(**{**asdict(default), **c.factors})
        old = free_fit([runs[a]], spec)
        out["directions"][f"fit {a} -> predict {b}"] = {
            "fitted": {k: round(v, 4) for k, v in c.factors.items()}, "held": c.held, "ridge": round(c.ridge, 4),
            "fit_s": round(fit_s, 2),
            "free_fit": {k: round(getattr(old, k), 4) for k in OLD_BOUNDS if k != "allreduce_latency_us"},
            "on_fitted_model": {"default": errors([runs[a]], spec, default),
                                "calibrated": errors([runs[a]], spec, fitted),
                                "free_fit": errors([runs[a]], spec, old)},
            "on_other_model": {"default": errors([runs[b]], spec, default),
                               "calibrated": errors([runs[b]], spec, fitted),
                               "free_fit": errors([runs[b]], spec, old)}}
    both = cal.calibrate(list(runs.values()), spec, default)
    out["fit on both"] = {"fitted": {k: round(v, 4) for k, v in both.factors.items()},
                          "errors": {k: errors([r], spec, Efficiency(**{**asdict(default), **both.factors}))
                                     for k, r in runs.items()}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--samples", type=Path, default=None, help="keep the measurements here")
    ap.add_argument("--reuse", action="store_true", help="read --samples instead of measuring")
    a = ap.parse_args()
    if a.reuse and a.samples and a.samples.exists():
        data = json.loads(a.samples.read_text())
    else:
        data = measure(a.dtype, a.threads, a.rounds)
        if a.samples:
            a.samples.write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps(analyse(data), indent=2))


if __name__ == "__main__":
    main()
