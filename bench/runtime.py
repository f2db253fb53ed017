"""Runtime efficiency: batch-1 decode tokens/s and achieved weight bandwidth vs a measured memory copy.

  python bench/runtime.py [--device cpu|cuda] [--model llama-3.1-8b] [--scale-layers N ...]

Achieved GB/s = weight bytes x tokens/s (gpt-fast's convention: each decode step reads every
weight once). Copy bandwidth = bytes read + bytes written per second by a large tensor copy
(STREAM's convention). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import torch

from gpumix.planner.catalog import load_catalog
from gpumix.profiler.measure.timing import copy_bandwidth_gbps, sync
from gpumix.profiler.runtime.engine import Engine
from gpumix.profiler.runtime.model import DTYPES, ModelArgs, build, weight_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--scale-layers", type=int, default=None)
    ap.add_argument("--scale-hidden", type=float, default=None)
    ap.add_argument("--scale-vocab", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = "cuda:0" if a.device == "cuda" else a.device
    args = ModelArgs.from_shape(load_catalog().model(a.model)).scaled(a.scale_layers, a.scale_hidden,
                                                                       a.scale_vocab)
    model = build(args, dev, DTYPES[a.dtype])
    wbytes = weight_bytes(model)
    copy = max(copy_bandwidth_gbps(dev) for _ in range(3))
    prompt = list(range(1, a.prompt + 1))
    rates = []
    for _ in range(a.repeats + 1):  # the first run warms up
        eng = Engine(model, n_slots=1, max_seq=a.prompt + a.tokens + 1)
        eng.add(prompt, 1)
        eng.run()  # prefill alone
        eng.add(prompt, a.tokens + 1)
        eng.step()  # this request's prefill
        sync(dev)
        t0 = time.perf_counter()
        eng.run()  # a.tokens decode steps at batch 1
        sync(dev)
        rates.append(a.tokens / (time.perf_counter() - t0))
    tok_s = max(rates[1:])
    achieved = wbytes * tok_s / 1e9
    print(json.dumps({
        "device": torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads() if not dev.startswith("cuda") else None,
        "cores": os.cpu_count(), "torch": torch.__version__, "dtype": a.dtype, "model": a.model,
        "run_args": args.to_dict(), "weight_mb": round(wbytes / 1e6, 1),
        "tokens_per_s": round(tok_s, 2), "achieved_gbps": round(achieved, 2),
        "copy_gbps": round(copy, 2), "fraction_of_copy": round(achieved / copy, 3)}, indent=2))


if __name__ == "__main__":
    main()
