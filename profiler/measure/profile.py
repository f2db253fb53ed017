"""`gpumix profile`: measure every workload model on the local device at each TP degree, fit the
latency model, and write throughput-table entries (the `plan --profiles` contract).

Flow per (model, TP): sweep_plan (no torch) -> spawn TP workers (or run in-process at TP 1, or
join torchrun's group) -> run_sweep on rank 0's clock -> fit -> entries at the model's SLO through
roofline.slo_capacity, the same steady-state math the analytic estimate uses. Then calibrate the
roofline's efficiency factors for this GPU type from all measurements.

Scaled-down models (Scale) keep the workload's model name in the entries; the scaling and the
shape actually run are written into each profile's provenance.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from gpumix.planner.catalog import Catalog, GpuSpec, ModelShape, norm_name
from gpumix.planner.errors import InputError
from gpumix.planner.workload import ModelDemand, Workload
from gpumix.profiler.measure import calibrate as cal
from gpumix.profiler.measure import fit as fitting
from gpumix.profiler.measure.timing import SweepPlan, sweep_plan
from gpumix.profiler.runtime.memory import footprint, refuse_if_too_large
from gpumix.profiler.runtime.spec import Scale  # noqa: F401  (ProfileOptions.scale; cli imports it from here)
from gpumix.planner.roofline import Efficiency, slo_capacity

GB = 1e9
CMD = "gpumix profile"
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class ProfileOptions:
    device: str = "cpu"
    tp_degrees: tuple[int, ...] = (1,)
    gpu_name: str | None = None  # default: the detected device name
    dtype: str = "bf16"
    scale: Scale = Scale()
    memory_gb: float | None = None  # per rank; default: 90% of GPU memory, half of RAM / TP on CPU
    prefill_lens: tuple[int, ...] | None = None  # default: powers of two up to the longest prompt
    batches: tuple[int, ...] | None = None  # default: powers of two up to max_batch
    contexts: tuple[int, ...] | None = None  # default: four lengths up to the longest request
    max_batch: int | None = None  # default: 256 on CUDA, 32 on CPU
    iters: int = 3
    rounds: int = 2
    seed: int = 0
    threads: int | None = None  # CPU threads per rank; default: cores / TP
    memory_budget_gb: float | None = None  # refuse a sweep needing more (runtime/memory.py); default: free memory


@dataclass
class ProfileRun:
    model: str
    gpu: str
    tp: int
    run_shape: ModelShape
    samples: list[fitting.Sample]
    latency: fitting.LatencyModel
    heldout: dict
    entries: list[dict]
    provenance: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"model": self.model, "gpu": self.gpu, "tp": self.tp, "provenance": self.provenance,
                "run_shape": {k: v for k, v in asdict(self.run_shape).items() if k not in ("name", "source")},
                "fit": {**self.latency.to_dict(), "heldout_error": self.heldout},
                "samples": [s.to_dict() for s in self.samples]}


# --- the device -------------------------------------------------------------------------------

def device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return "CPU " + line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU " + (platform.processor() or platform.machine())


def gpumix_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gpumix")
    except PackageNotFoundError:
        return "unknown"


def memory_bytes_per_rank(opts: ProfileOptions, tp: int) -> float:
    if opts.memory_gb is not None:
        return opts.memory_gb * GB
    if opts.device.startswith("cuda"):
        import torch

        return 0.9 * torch.cuda.get_device_properties(opts.device).total_memory
    return 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / tp


def measured_spec(name: str, opts: ProfileOptions) -> GpuSpec:
    """A spec from measured roofs, for devices the GPU catalog lacks (CPUs, new GPUs)."""
    import torch

    from gpumix.profiler.measure.timing import copy_bandwidth_gbps, matmul_tflops
    from gpumix.profiler.runtime.model import DTYPES

    bw = copy_bandwidth_gbps(opts.device)
    if opts.memory_gb is not None:  # what the device has for serving, as --memory-gb says
        mem = opts.memory_gb
    elif opts.device.startswith("cuda"):
        mem = torch.cuda.get_device_properties(opts.device).total_memory / GB
    else:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB
    cores = torch.cuda.device_count() if opts.device.startswith("cuda") else (os.cpu_count() or 1)
    return GpuSpec(name=name, memory_gb=mem, memory_bandwidth_gbps=bw,
                   bf16_tflops=matmul_tflops(opts.device, DTYPES[opts.dtype]),
                   interconnect_gbps=bw, gpus_per_node=max(cores, max(opts.tp_degrees)))


# --- the grid ---------------------------------------------------------------------------------

def _powers(lo: int, hi: int) -> list[int]:
    out, v = [], lo
    while v < hi:
        out.append(v)
        v *= 2
    return out + [hi]


def grid(m: ModelDemand, opts: ProfileOptions) -> tuple[list[int], list[int], list[int]]:
    longest_in = max(b.input_tokens for b in m.buckets)
    longest = max(b.input_tokens + b.output_tokens for b in m.buckets)
    max_batch = opts.max_batch or (256 if opts.device.startswith("cuda") else 32)
    prefill = list(opts.prefill_lens or _powers(min(32, longest_in), longest_in))
    batches = list(opts.batches or _powers(1, max_batch))
    contexts = list(opts.contexts or sorted({max(16, longest // 8), longest // 4, longest // 2, longest}))
    return prefill, batches, contexts


def run_args(shape: ModelShape, scale: Scale):
    from gpumix.profiler.runtime.model import ModelArgs

    return ModelArgs.from_shape(shape).scaled(scale.layers, scale.hidden, scale.vocab)


# --- one (model, TP) sweep ----------------------------------------------------------------------

def sweep_worker(rank: int, world: int, device: str, report: Callable, args, dtype: str,
                 plan: SweepPlan, iters: int, rounds: int, seed: int, threads: int | None) -> list[dict]:
    """One TP rank: build, shard, sweep. Every rank runs the same steps; rank 0's clock counts."""
    import torch

    from gpumix.profiler.measure.timing import run_sweep
    from gpumix.profiler.runtime.model import DTYPES, build
    from gpumix.profiler.runtime.tp import apply_tp

    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // world))
    try:
        model = apply_tp(build(args, device, DTYPES[dtype], seed), rank, world)
        samples = run_sweep(model, device, plan, iters=iters, rounds=rounds, report=report,
                            agree=_agree(device) if world > 1 else (lambda n: n))
    finally:
        torch.set_num_threads(before)
    return [s.to_dict() for s in samples]


def _agree(device: str) -> Callable[[int], int]:
    """Ranks agree on the most timed runs any of them wants (all-reduce MAX)."""
    import torch
    import torch.distributed as dist

    def agree(n: int) -> int:
        t = torch.tensor([n], device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())
    return agree


def sweep_footprint(args, dtype: str, plan: SweepPlan, tp: int):
    """What the sweep holds at its largest: the model and its biggest KV cache (timing.run_sweep
    allocates batch x (context + 1) tokens per decode batch, one prompt's worth for prefill)."""
    tokens = max([max(plan.prefill_lens, default=1)] + [b * (max(c) + 1) for b, c in plan.decode])
    return footprint(args.to_dict(), dtype, 1, tokens, tp)


def measure(args, tp: int, plan: SweepPlan, opts: ProfileOptions, progress: Callable) -> list | None:
    """Samples from rank 0 (None on other torchrun ranks)."""
    from gpumix.profiler.runtime import tp as tpmod

    call = (args, opts.dtype, plan, opts.iters, opts.rounds, opts.seed, opts.threads)
    if tpmod.under_torchrun():
        rank, world, dev = tpmod.init_from_env(opts.device)
        if world != tp:
            raise ValueError(f"torchrun started {world} processes but --tp is {tp}")
        out = sweep_worker(rank, world, dev, progress if rank == 0 else (lambda m: None), *call)
        return out if rank == 0 else None
    if tp == 1:
        dev = "cuda:0" if opts.device == "cuda" else opts.device
        return sweep_worker(0, 1, dev, progress, *call)
    return tpmod.spawn(sweep_worker, tp, opts.device, call, on_progress=progress)


def entries(m: ModelDemand, gpu: str, tp: int, latency: fitting.LatencyModel, shape: ModelShape,
            dtype_bytes: int, memory_bytes: float, batch_cap: int) -> list[dict]:
    """Max req/s per bucket at the model's SLO from the fitted step times (roofline.slo_capacity)."""
    out = []
    weights = shape.params * dtype_bytes / tp
    for b in m.buckets:
        t_p = latency.prefill_ms(b.input_tokens) * 1e-3
        context = b.input_tokens + (b.output_tokens + 1) / 2
        per_request = (b.input_tokens + b.output_tokens) * shape.kv_bytes_per_token(tp, dtype_bytes)
        b_mem = min(int(max(memory_bytes - weights, 0) // per_request), batch_cap)
        state, why = slo_capacity(t_p, lambda n: latency.decode_ms(n, context) * 1e-3, b.output_tokens,
                                  m.slo.ttft_ms, m.slo.tpot_ms, b_mem)
        e = {"model": m.name, "gpu": gpu, "tp": tp, "input_tokens": b.input_tokens,
             "output_tokens": b.output_tokens, "max_rps": 0.0 if why else round(state.rate, 6),
             "source": "measured", "batch": 0 if why else state.batch}
        if why:
            e["reason"] = why
        out.append(e)
    return out


def provenance(opts: ProfileOptions, device_label: str, args, plan: SweepPlan, memory_bytes: float,
               tp: int) -> dict:
    import torch

    return {"device": opts.device, "device_name": device_label, "torch": torch.__version__,
            "dtype": opts.dtype, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "gpumix": gpumix_version(), "scale": asdict(opts.scale), "scaled": opts.scale.active,
            "run_args": args.to_dict(), "memory_gb_per_rank": round(memory_bytes / GB, 3),
            "threads": None if opts.device != "cpu" else opts.threads or max(1, (os.cpu_count() or 1) // tp),
            "sweep": plan.to_dict(), "iters": opts.iters,
            "rounds": opts.rounds}


def profile_workload(workload: Workload, catalog: Catalog, opts: ProfileOptions,
                     progress: Callable[[str, int], Callable] = lambda label, total: (lambda msg: None)
                     ) -> tuple[list[ProfileRun], dict | None]:
    """Profile every model x TP degree; returns the runs and this GPU's calibration (or None on
    non-zero torchrun ranks, which return no runs)."""
    from gpumix.profiler.runtime.model import head_count_ok

    label = device_name(opts.device)
    gpu = opts.gpu_name or label
    dtype_bytes = DTYPE_BYTES[opts.dtype]
    runs: list[ProfileRun] = []
    todo = []  # every (model, TP) sweep, each checked against the memory budget before any is built
    for i, m in enumerate(workload.models):
        args = run_args(m.shape, opts.scale)
        shape = args.shape(m.name)
        prefill, batches, contexts = grid(m, opts)
        for tp in opts.tp_degrees:
            why = head_count_ok(args, tp)
            if why:
                raise InputError(workload.path, f"models[{i}]", f"{m.name} as run cannot use --tp {tp}: {why}")
            memory = memory_bytes_per_rank(opts, tp)
            kv_budget = memory - shape.params * dtype_bytes / tp
            plan = sweep_plan(shape, tp, dtype_bytes, kv_budget, prefill, batches, contexts)
            refuse_if_too_large(CMD, f"{m.name} TP{tp}" + (" (scaled)" if opts.scale.active else ""),
                                [sweep_footprint(args, opts.dtype, plan, tp)], opts.device, opts.memory_budget_gb)
            todo.append((m, args, shape, tp, memory, plan))
    for m, args, shape, tp, memory, plan in todo:
        tick = progress(f"{m.name} TP{tp}", plan.points * opts.rounds)
        raw = measure(args, tp, plan, opts, tick)
        if raw is None:
            continue
        samples = [fitting.Sample.from_dict(d) for d in raw]
        latency = fitting.fit(samples)
        cap = max(b for b, _ in plan.decode) if plan.decode else 1
        runs.append(ProfileRun(
            m.name, gpu, tp, shape, samples, latency, fitting.holdout_error(samples),
            entries(m, gpu, tp, latency, shape, dtype_bytes, memory, cap),
            provenance(opts, label, args, plan, memory, tp)))
    if not runs:
        return runs, None
    spec = catalog.gpu(gpu) or measured_spec(gpu, opts)
    return runs, calibration_record(runs, spec, catalog)


def calibration_record(runs: list[ProfileRun], spec: GpuSpec, catalog: Catalog) -> dict:
    measured = [cal.Measured(r.run_shape, r.tp, DTYPE_BYTES[r.provenance.get("dtype", "bf16")],
                             tuple(r.samples)) for r in runs]
    start = Efficiency.from_dict(catalog.gpu_efficiency(spec.name))
    c = cal.calibrate(measured, spec, start)
    return cal.record(c, spec, catalog.gpu(spec.name) is not None, [r.model for r in runs])


# --- the output file -----------------------------------------------------------------------------

def entry_key(e: dict) -> tuple:
    return (norm_name(e["model"]), norm_name(e["gpu"]), int(e["tp"]), int(e["input_tokens"]),
            int(e["output_tokens"]))


def merge(old: dict | None, runs: list[ProfileRun], calibration: dict | None, generator: str) -> dict:
    """New entries and profiles replace old ones with the same key; everything else is kept."""
    doc = dict(old or {})
    new_entries = [e for r in runs for e in r.entries]
    fresh = {entry_key(e) for e in new_entries}
    doc["entries"] = [e for e in doc.get("entries", []) if entry_key(e) not in fresh] + new_entries
    keys = {(norm_name(r.model), norm_name(r.gpu), r.tp) for r in runs}
    doc["profiles"] = [p for p in doc.get("profiles", [])
                       if (norm_name(p["model"]), norm_name(p["gpu"]), int(p["tp"])) not in keys]
    doc["profiles"] += [r.to_dict() for r in runs]
    if calibration is not None:
        doc.setdefault("calibration", {})[calibration["gpu"]] = calibration
    doc["generator"] = generator
    return doc


def load_profiled_workload(workload: Path | None, catalog):
    """The workload to profile; every model needs a shape (GPUs may be new: not checked)."""
    from gpumix.planner.errors import InputError
    from gpumix.planner.workload import load_workload
    from gpumix.data import EXAMPLE_WORKLOAD
    from gpumix.profiler.runtime.spec import refusal_for

    wl = load_workload(workload or EXAMPLE_WORKLOAD, catalog, need_shapes=False)
    for i, m in enumerate(wl.models):
        if m.shape is None:
            raise InputError(wl.path, f"models[{i}].name", f"unknown model {m.name!r}: profiling "
                             "needs its shape (add `config: path/to/config.json`)")
        why = refusal_for(m)
        if why:
            raise InputError(wl.path, f"models[{i}]", why)
    return wl


_POSITIVE_SHAPE = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                   "vocab_size")


def check_profile_records(doc, path: Path) -> list[str]:
    """The GPU types of a profile file's stored `profiles` records, sorted, after checking every
    record as `gpumix profile` writes it (names, TP, dtype, run_shape sizes, samples, fit), so that
    a bad record is one line naming it before anything is fitted or written."""
    import dataclasses
    import math

    from gpumix.planner.reading import MAX_NAME, in_bounds, name_problem, quote

    def fail(field: str, msg: str):
        raise InputError(str(path), field, msg)

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    records = doc.get("profiles", []) if isinstance(doc, dict) else None
    if not isinstance(records, list):
        fail("profiles", "must be a list of profile records")
    kinds = {f.name: str(f.type) for f in dataclasses.fields(ModelShape)}
    gpus = set()
    for i, p in enumerate(records):
        w = f"profiles[{i}]"
        if not isinstance(p, dict):
            fail(w, "must be a profile record (an object)")
        for k in ("model", "gpu"):
            if name_problem(p.get(k)):
                fail(f"{w}.{k}", f"{name_problem(p.get(k))}, got {quote(p.get(k))}")
        if not isinstance(p.get("tp"), int) or isinstance(p["tp"], bool) or not in_bounds(p["tp"], "tp"):
            fail(f"{w}.tp", f"must be an integer in [1, 1024], got {quote(p.get('tp'))}")
        prov = p.get("provenance", {})
        if not isinstance(prov, dict) or prov.get("dtype", "bf16") not in DTYPE_BYTES:
            fail(f"{w}.provenance.dtype", f"must be one of {', '.join(DTYPE_BYTES)}")
        shape = p.get("run_shape")
        if not isinstance(shape, dict):
            fail(f"{w}.run_shape", "must be an object of model sizes")
        for k, v in shape.items():
            kind = kinds.get(k, "")
            if kind.startswith("int") and not (v is None and "None" in kind):
                if not isinstance(v, int) or isinstance(v, bool) or not (k not in _POSITIVE_SHAPE or v >= 1) \
                        or not 0 <= v <= 10**9:
                    fail(f"{w}.run_shape.{k}", f"must be a {'positive ' if k in _POSITIVE_SHAPE else ''}integer "
                                               f"of at most 1e9, got {quote(v)}")
            elif kind == "bool" and not isinstance(v, bool):
                fail(f"{w}.run_shape.{k}", f"must be true or false, got {quote(v)}")
            elif kind == "str" and (not isinstance(v, str) or len(v) > MAX_NAME):
                fail(f"{w}.run_shape.{k}", f"must be a short string, got {quote(v)}")
        samples = p.get("samples")
        if not isinstance(samples, list):
            fail(f"{w}.samples", "must be a list")
        for j, smp in enumerate(samples):
            sw = f"{w}.samples[{j}]"
            if not isinstance(smp, dict) or smp.get("kind") not in ("prefill", "decode"):
                fail(sw, "must be {kind: prefill|decode, batch, tokens, ms}")
            for k in ("batch", "tokens"):
                if not isinstance(smp.get(k), int) or isinstance(smp[k], bool) or not in_bounds(smp[k], "tokens"):
                    fail(f"{sw}.{k}", f"must be an integer in [1, 1e7], got {quote(smp.get(k))}")
            if not number(smp.get("ms")) or not 0 < smp["ms"] <= 1e8:
                fail(f"{sw}.ms", f"must be a positive number of milliseconds, got {quote(smp.get('ms'))}")
        fit = p.get("fit")
        for part in ("prefill_ms", "decode_ms"):
            coef = fit.get(part) if isinstance(fit, dict) else None
            if not isinstance(coef, dict) or not all(number(coef.get(k)) for k in ("a", "b", "c")):
                fail(f"{w}.fit.{part}", "must hold the fitted coefficients a, b and c (finite numbers)")
        gpus.add(p["gpu"])
    calibration = doc.get("calibration", {})
    if not isinstance(calibration, dict) or not all(isinstance(v, dict) for v in calibration.values()):
        fail("calibration", "must map GPU names to their calibration records")
    return sorted(gpus)


def refit_calibration(doc: dict, path: Path, gpu: str, catalog) -> tuple[dict, dict]:
    """(calibration record, provenance of its first run) refitted from the samples a profile file
    stores for one GPU type."""
    from gpumix.planner.catalog import ModelShape
    from gpumix.planner.errors import InputError
    from gpumix.profiler.measure.fit import LatencyModel, Sample

    check_profile_records(doc, path)  # every record, before any is read
    runs = []
    for i, p in enumerate(doc.get("profiles", [])):
        if p.get("gpu") != gpu:
            continue
        try:
            shape = ModelShape(name=p["model"], **p["run_shape"])
            samples = [Sample.from_dict(s) for s in p["samples"]]
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(str(path), f"profiles[{i}]", f"bad profile record: {e}") from None
        runs.append(ProfileRun(p["model"], gpu, int(p["tp"]), shape, samples,
                               LatencyModel.from_dict(p["fit"]), {}, [], p.get("provenance", {})))
    if not runs:
        raise InputError(str(path), "profiles", f"no measurements for GPU {gpu!r}")
    stored = doc.get("calibration", {}).get(gpu, {}).get("spec")
    spec = catalog.gpu(gpu)
    if spec is None and stored is not None:
        from gpumix.planner.efficiency import read_spec

        spec = read_spec(str(path), f"calibration.{gpu}.spec",  # what an efficiency file's spec may hold
                         gpu, {k: v for k, v in stored.items() if k in ("arch", "memory_gb", "memory_bandwidth_gbps",
                               "bf16_tflops", "interconnect_gbps", "gpus_per_node", "fp8_tflops", "int8_tops")}
                         if isinstance(stored, dict) else stored)
    if spec is None:
        raise InputError(str(path), f"calibration.{gpu}.spec",
                         "missing: an uncatalogued device needs its measured spec")
    return calibration_record(runs, spec, catalog), runs[0].provenance


def merged_table(old: dict, new: list[dict], log: str, records: list, generator: str) -> dict:
    """`old` with `new` entries replacing those of the same model, GPU, TP and bucket, and
    `records` appended to its `log` list."""
    fresh = {entry_key(e) for e in new}
    doc = {**old, "entries": [e for e in old.get("entries", []) if entry_key(e) not in fresh] + new}
    doc[log] = old.get(log, []) + records
    doc.setdefault("generator", generator)
    return doc
