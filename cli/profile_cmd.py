"""`gpumix profile`: measured capacities for `gpumix plan --profiles`.

  gpumix profile [run] WORKLOAD --device cpu|cuda --tp 1,2 --out PROFILES.json
  gpumix profile calibrate PROFILES.json [--efficiency FILE]
  gpumix profile import-vllm RESULT.json ... --gpu NAME --out PROFILES.json

torch is imported inside the commands only: `import gpumix.cli.app` stays torch-free.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from gpumix.data import DATA_DIR

err = Console(stderr=True, highlight=False)
CMD = "gpumix profile"


class _RunByDefault(TyperGroup):
    """`gpumix profile WORKLOAD ...` means `gpumix profile run WORKLOAD ...`."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


profile_app = typer.Typer(
    cls=_RunByDefault,
    help="Measure per-model capacity on this machine's device (or import vLLM benchmark results) "
         "as a throughput table for `gpumix plan --profiles`. `gpumix profile WORKLOAD ...` runs "
         "`gpumix profile run`.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _fail(e: Exception) -> typer.Exit:
    code = getattr(e, "exit_code", 1)
    err.print(f"gpumix: {'error' if code == 2 else 'failed'}: {e}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def _ints(text: Optional[str], option: str) -> Optional[tuple[int, ...]]:
    from gpumix.planner.errors import InputError

    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise InputError(CMD, option, f"must be a comma-separated list of positive integers, got {text!r}")
    return values


def _read_doc(path: Path) -> Optional[dict]:
    from gpumix.planner.errors import InputError

    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(str(path), "", f"cannot merge into it: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries", []), list):
        raise InputError(str(path), "entries", "cannot merge into it: not a throughput table")
    return doc


def _write(path: Path, doc: dict) -> None:
    from gpumix.planner.plan import write_atomic

    write_atomic(path, json.dumps(doc, indent=2) + "\n")


def _torch_or_fail() -> None:
    from gpumix.planner.errors import InputError

    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(CMD, "", "needs torch: pip install 'gpumix[runtime]'") from None


OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Throughput table to write; an existing "
                                      "one is merged into (same model, GPU, TP and bucket replaced).")]


@profile_app.command()
def run(
    workload: Annotated[Optional[Path], typer.Argument(
        help="Workload file; every model is profiled for its buckets and SLO. Default: the bundled "
             "example.", show_default=False)] = None,
    out_path: OutOpt = Path("profiles.json"),
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    tp: Annotated[str, typer.Option("--tp", help="TP degrees, comma-separated, e.g. 1,2.")] = "1",
    gpu_name: Annotated[Optional[str], typer.Option(
        "--gpu-name", help="`gpu` of the entries (match the workload's GPU names, e.g. H200). "
                           "Default: the detected device name.")] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="bf16, fp16 or fp32.")] = "bf16",
    scale_layers: Annotated[Optional[int], typer.Option(
        "--scale-layers", min=1, help="Run only this many layers (quick CPU profiles; recorded in "
                                      "the provenance, entries keep the model's name).")] = None,
    scale_hidden: Annotated[Optional[float], typer.Option(
        "--scale-hidden", min=0.01, max=1.0, help="Multiply heads, hidden size and FFN width by this "
                                                  "(head size and GQA group kept).")] = None,
    scale_vocab: Annotated[Optional[int], typer.Option(
        "--scale-vocab", min=16, help="Cap the vocabulary (the output head dominates small models).")] = None,
    memory_gb: Annotated[Optional[float], typer.Option(
        "--memory-gb", min=0.01, help="Memory per rank for weights + KV cache; limits the batch. "
                                      "Default: 90% of GPU memory; on CPU half the RAM / TP.")] = None,
    prefill_lens: Annotated[Optional[str], typer.Option(
        "--prefill-lens", help="Prompt lengths to time (default: powers of two to the longest).")] = None,
    batches: Annotated[Optional[str], typer.Option("--batches", help="Decode batch sizes to time.")] = None,
    contexts: Annotated[Optional[str], typer.Option("--contexts", help="Decode context lengths to time.")] = None,
    max_batch: Annotated[Optional[int], typer.Option(
        "--max-batch", min=1, help="Largest decode batch (default 256 on CUDA, 32 on CPU); also the "
                                   "largest batch an entry assumes.")] = None,
    iters: Annotated[int, typer.Option("--iters", min=1, help="Timed runs per point (median).")] = 3,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Sweeps of the grid (fastest kept).")] = 2,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", min=1, help="CPU threads per rank (default: cores / TP).")] = None,
    calibrate_to: Annotated[Optional[Path], typer.Option(
        "--calibrate", help=f"Also write the fitted efficiency factors for this GPU type into this "
                            f"efficiency file (the planner reads {DATA_DIR / 'efficiency.json'}).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
):
    """Profile every workload model on the local device at each TP degree: sweep prefill and
    decode, fit a latency model, write entries at each model's SLO (source "measured")."""
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.planner.workload import load_workload
    from gpumix.solvers.pipeline import EXAMPLE_WORKLOAD

    try:
        if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
            raise InputError(CMD, "--device", f"must be cpu or cuda, got {device!r}")
        if dtype not in ("bf16", "fp16", "fp32"):
            raise InputError(CMD, "--dtype", f"must be bf16, fp16 or fp32, got {dtype!r}")
        _torch_or_fail()
        import torch

        if device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(CMD, "--device", "cuda requested but torch sees no GPU")
        from gpumix.profiler.measure.profile import ProfileOptions, Scale, merge, profile_workload

        opts = ProfileOptions(
            device=device, tp_degrees=_ints(tp, "--tp"), gpu_name=gpu_name, dtype=dtype,
            scale=Scale(scale_layers, scale_hidden, scale_vocab), memory_gb=memory_gb,
            prefill_lens=_ints(prefill_lens, "--prefill-lens"), batches=_ints(batches, "--batches"),
            contexts=_ints(contexts, "--contexts"), max_batch=max_batch, iters=iters, rounds=rounds,
            threads=threads)
        catalog = load_catalog()
        wl = load_workload(workload or EXAMPLE_WORKLOAD, catalog, need_shapes=False)  # GPUs may be new
        for i, m in enumerate(wl.models):
            if m.shape is None:
                raise InputError(wl.path, f"models[{i}].name", f"unknown model {m.name!r}: profiling "
                                 "needs its shape (add `config: path/to/config.json`)")
        old = _read_doc(out_path)
        runs, calibration = _with_progress(lambda progress: profile_workload(wl, catalog, opts, progress),
                                           quiet)
        if not runs:  # a non-zero torchrun rank: rank 0 writes
            return
        _write(out_path, merge(old, runs, calibration, "gpumix profile"))
        if calibrate_to is not None and calibration is not None:
            _write_calibration(calibrate_to, calibration, runs[0].provenance)
    except GpumixError as e:
        raise _fail(e) from None
    except OSError as e:
        raise _fail(InputError(str(out_path), "--out", f"cannot write: {e.strerror}")) from None
    if not quiet:
        _summary(runs, calibration, out_path, calibrate_to)


def _with_progress(work, quiet: bool):
    if quiet:
        return work(lambda label, total: (lambda msg: None))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as bar:
        def progress(label: str, total: int):
            task = bar.add_task(label, total=total)
            return lambda msg: bar.advance(task)
        return work(progress)


def _write_calibration(path: Path, calibration: dict, prov: dict) -> None:
    from gpumix.profiler.measure.calibrate import Calibration, write_efficiency

    c = Calibration(calibration["gpu"], calibration["factors"], calibration["median_error_before"],
                    calibration["median_error_after"], calibration["samples"])
    write_efficiency(path, c, {k: prov.get(k) for k in ("device_name", "torch", "dtype", "date")})


def _summary(runs, calibration, out_path: Path, calibrate_to: Optional[Path]) -> None:
    for r in runs:
        h = r.heldout
        err_txt = f"held-out error median {h['median']:.1%} p90 {h['p90']:.1%}" if h["points"] else ""
        served = sum(1 for e in r.entries if e["max_rps"] > 0)
        err.print(f"{r.model} TP{r.tp} on {r.gpu}: {len(r.samples)} points, {err_txt}; "
                  f"{served}/{len(r.entries)} buckets meet the SLO", markup=False)
    if calibration is not None:
        err.print(f"calibration {calibration['gpu']}: roofline median error "
                  f"{calibration['median_error_before']:.0%} -> {calibration['median_error_after']:.0%}"
                  + (f", written to {calibrate_to}" if calibrate_to else ""), markup=False)
    err.print(f"{sum(len(r.entries) for r in runs)} entries written to {out_path}", markup=False)


@profile_app.command()
def calibrate(
    profiles: Annotated[Path, typer.Argument(help="A throughput table written by `gpumix profile`.")],
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="GPU type to calibrate (default: every "
                                                              "one the file has measurements for).")] = None,
    efficiency: Annotated[Path, typer.Option(
        "--efficiency", help="Efficiency file to update (its `gpus` entry for the type).")] = DATA_DIR / "efficiency.json",
):
    """Refit a GPU type's roofline efficiency factors from the samples a profile file stores."""
    from gpumix.planner.catalog import GpuSpec, ModelShape, load_catalog
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.profiler.measure.fit import LatencyModel, Sample
    from gpumix.profiler.measure.profile import ProfileRun, calibration_record

    try:
        doc = _read_doc(profiles)
        if doc is None:
            raise InputError(str(profiles), "", "file not found")
        catalog = load_catalog()
        gpus = sorted({p["gpu"] for p in doc.get("profiles", [])})
        for name in [gpu] if gpu else gpus:
            runs = []
            for i, p in enumerate(doc.get("profiles", [])):
                if p.get("gpu") != name:
                    continue
                try:
                    shape = ModelShape(name=p["model"], **p["run_shape"])
                    samples = [Sample.from_dict(s) for s in p["samples"]]
                except (KeyError, TypeError, ValueError) as e:
                    raise InputError(str(profiles), f"profiles[{i}]", f"bad profile record: {e}") from None
                runs.append(ProfileRun(p["model"], name, int(p["tp"]), shape, samples,
                                       LatencyModel.from_dict(p["fit"]), {}, [], p.get("provenance", {})))
            if not runs:
                raise InputError(str(profiles), "profiles", f"no measurements for GPU {name!r}")
            stored = doc.get("calibration", {}).get(name, {}).get("spec")
            spec = catalog.gpu(name) or (GpuSpec(**{**stored, "aliases": tuple(stored.get("aliases", ()))})
                                         if stored else None)
            if spec is None:
                raise InputError(str(profiles), f"calibration.{name}.spec",
                                 "missing: an uncatalogued device needs its measured spec")
            record = calibration_record(runs, spec, catalog)
            _write_calibration(efficiency, record, runs[0].provenance)
            err.print(f"calibration {name}: roofline median error {record['median_error_before']:.0%} -> "
                      f"{record['median_error_after']:.0%}; factors {record['factors']} written to "
                      f"{efficiency}", markup=False, soft_wrap=True)
    except GpumixError as e:
        raise _fail(e) from None


@profile_app.command("import-vllm")
def import_vllm(
    results: Annotated[list[Path], typer.Argument(help="`vllm bench serve --save-result` JSON files.")],
    gpu: Annotated[str, typer.Option("--gpu", help="GPU type the server ran on (e.g. H100).")],
    out_path: OutOpt = Path("profiles.json"),
    tp: Annotated[int, typer.Option("--tp", min=1, help="The server's tensor-parallel size.")] = 1,
    model: Annotated[Optional[str], typer.Option("--model", help="Model name for the entries "
                                                                  "(default: model_id of each file).")] = None,
    workload: Annotated[Optional[Path], typer.Option(
        "--workload", help="Take each model's SLO from this workload.")] = None,
    ttft_ms: Annotated[Optional[float], typer.Option("--ttft-ms", min=0.0, help="TTFT SLO for every model.")] = None,
    tpot_ms: Annotated[Optional[float], typer.Option("--tpot-ms", min=0.0, help="TPOT SLO for every model.")] = None,
    stat: Annotated[str, typer.Option("--stat", help="Latency statistic held to the SLO: mean, median "
                                                     "or pNN as saved (p99 by default).")] = "p99",
    input_tokens: Annotated[Optional[int], typer.Option("--input-tokens", min=1, help="Bucket input tokens "
                                                        "(default: the run's mean).")] = None,
    output_tokens: Annotated[Optional[int], typer.Option("--output-tokens", min=1, help="Bucket output "
                                                         "tokens (default: the run's mean).")] = None,
):
    """Turn vLLM serving benchmarks into throughput-table entries (source "vllm")."""
    from gpumix.planner.catalog import load_catalog, norm_name
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.planner.workload import load_workload
    from gpumix.profiler.measure import vllm_import as vi

    try:
        if (ttft_ms is None) != (tpot_ms is None):
            raise InputError(CMD, "--ttft-ms" if ttft_ms is None else "--tpot-ms",
                             "give both --ttft-ms and --tpot-ms")
        catalog = load_catalog()
        runs = [vi.read_run(p, stat, model, input_tokens, output_tokens) for p in results]
        slo = None
        if workload is not None:
            wl = load_workload(workload, catalog, need_shapes=False)
            names = {norm_name(m.name): m for m in wl.models}

            def canonical(name: str) -> str:
                shape = catalog.model(name)
                m = names.get(norm_name(name)) or (names.get(norm_name(shape.name)) if shape else None)
                return m.name if m else name
            runs = [replace(r, model=canonical(r.model)) for r in runs]
            slo = {m.name: (m.slo.ttft_ms, m.slo.tpot_ms) for m in wl.models}
        elif ttft_ms is not None:
            slo = {r.model: (ttft_ms, tpot_ms) for r in runs}
        new, notes = vi.entries(runs, gpu, tp, slo)
        old = _read_doc(out_path) or {}
        from gpumix.profiler.measure.profile import entry_key

        fresh = {entry_key(e) for e in new}
        doc = {**old, "entries": [e for e in old.get("entries", []) if entry_key(e) not in fresh] + new}
        doc["imports"] = old.get("imports", []) + vi.provenance(runs, stat)
        doc.setdefault("generator", "gpumix profile import-vllm")
        _write(out_path, doc)
    except GpumixError as e:
        raise _fail(e) from None
    except OSError as e:
        raise _fail(InputError(str(out_path), "--out", f"cannot write: {e.strerror}")) from None
    for n in notes:
        err.print(f"note: {n}", markup=False, soft_wrap=True)
    err.print(f"{len(new)} entries from {len(runs)} run(s) written to {out_path}", markup=False)
