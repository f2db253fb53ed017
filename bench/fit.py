"""Prediction error of the fitted latency model, and what calibration does for unmeasured models.

  python bench/fit.py [--device cpu|cuda] [--threads N]

1. Sweep prefill and decode of a scaled Llama-3.1-8B shape, fit prefill(n) and decode(B, ctx)
   on a random 70% of the grid, predict the other 30% (20 splits): median and p90 |error|.
2. Calibrate the roofline's efficiency factors on that model, then compare the roofline's step-time
   error on a different measured model (scaled Qwen2.5-7B: other widths, heads, depth) with the
   default and with the calibrated factors. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from gpumix.planner.catalog import load_catalog
from gpumix.profiler.measure import calibrate as cal
from gpumix.profiler.measure.fit import fit, holdout_error
from gpumix.profiler.measure.timing import copy_bandwidth_gbps, matmul_tflops, run_sweep, sweep_plan
from gpumix.planner.roofline import Efficiency
from gpumix.profiler.runtime.model import DTYPES, ModelArgs, build

CAT = load_catalog()


def sweep(name, scale, dev, dtype, lens, batches, contexts, rounds):
    args = ModelArgs.from_shape(CAT.model(name)).scaled(*scale)
    shape = args.shape(name)
    plan = sweep_plan(shape, 1, 2 if dtype != "fp32" else 4, 8e9, lens, batches, contexts)
    samples = run_sweep(build(args, dev, DTYPES[dtype]), dev, plan, rounds=rounds)
    return shape, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = "cuda:0" if a.device == "cuda" else a.device
    lens, batches, contexts = [32, 64, 128, 256, 512, 1024, 2048], [1, 2, 4, 8, 16, 32], [128, 512, 1024, 2048]
    t0 = time.perf_counter()
    shape_a, samples_a = sweep("llama-3.1-8b", (2, 0.25, 32000), dev, a.dtype, lens, batches, contexts, a.rounds)
    shape_b, samples_b = sweep("qwen2.5-7b", (3, 0.15, 48000), dev, a.dtype, lens, batches, contexts, a.rounds)
    sweep_s = time.perf_counter() - t0
    dbytes = 2 if a.dtype != "fp32" else 4
    spec_name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    spec = CAT.gpu(spec_name)
    if spec is None:
        from gpumix.planner.catalog import GpuSpec

        bw = max(copy_bandwidth_gbps(dev) for _ in range(3))
        spec = GpuSpec(spec_name, 16.0, bw, matmul_tflops(dev, DTYPES[a.dtype]), bw, 8)
    run_a = cal.Measured(shape_a, 1, dbytes, tuple(samples_a))
    run_b = cal.Measured(shape_b, 1, dbytes, tuple(samples_b))
    c = cal.calibrate([run_a], spec, Efficiency())
    calibrated = Efficiency(**{**Efficiency().__dict__, **c.factors})
    out = {
        "device": spec_name, "threads": torch.get_num_threads(), "dtype": a.dtype, "sweep_s": round(sweep_s, 1),
        "fit": {name: {**holdout_error(s), "points_measured": len(s), "model": fit(s).to_dict()}
                for name, s in (("llama-3.1-8b scaled", samples_a), ("qwen2.5-7b scaled", samples_b))},
        "calibration": {
            "spec": {"memory_bandwidth_gbps": round(spec.memory_bandwidth_gbps, 1),
                     "tflops": round(spec.bf16_tflops, 3)},
            "factors": {k: round(v, 4) for k, v in c.factors.items()},
            "fitted_on_median_error": {"default": round(c.error_before, 3), "calibrated": round(c.error_after, 3)},
            "unmeasured_model_median_error": {
                "default": round(cal.median_error([run_b], spec, Efficiency()), 3),
                "calibrated": round(cal.median_error([run_b], spec, calibrated), 3)}},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
