"""`gpumix profile`: measured capacities for `gpumix plan --profiles`.

  gpumix profile [run] WORKLOAD --device cpu|cuda --tp 1,2 --out PROFILES.json
  gpumix profile calibrate PROFILES.json [--out FILE] [--efficiency FILE]
  gpumix profile import-vllm RESULT.json ... --gpu NAME [--quantization Q] --out PROFILES.json
  gpumix profile endpoint WORKLOAD --endpoint URL --gpu-name NAME --out PROFILES.json

torch is imported inside the commands only: `import gpumix.cli.app` stays torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from gpumix.planner import reading
from gpumix.cli import render
from gpumix.cli.common import (cannot_write, check_device, clean, dim, err, fail_run, name_option, one_of, positive_ints,
                               silent, write_json)
from gpumix.planner.efficiency import refuse_package_path

CMD = "gpumix profile"


class _RunByDefault(TyperGroup):
    """`gpumix profile WORKLOAD ...` means `gpumix profile run WORKLOAD ...`."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_RunByDefault,
    help="Measure per-model capacity on this machine's device (or import vLLM benchmark results) "
         "as a throughput table for `gpumix plan --profiles`. `gpumix profile WORKLOAD ...` runs "
         "`gpumix profile run`.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Throughput table to write; an existing "
                                      "one is merged into (same model, GPU, TP and bucket replaced).")]


@app.command()
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
    memory_budget: Annotated[Optional[float], typer.Option(
        "--memory-budget", min=0.01, metavar="GB", help="Refuse, before building anything, a model whose "
        "weights + KV cache (estimated from its shape) exceed this many GB. Default: 80% of the memory "
        "free now (CUDA: the device's).")] = None,
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
        "--calibrate", metavar="FILE", help="Also write the fitted efficiency factors for this GPU type "
                                            "(and a measured spec for one outside the catalog) into your "
                                            "efficiency file, created or merged into; plan with "
                                            "`--efficiency FILE`.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
):
    """Profile every workload model on the local device at each TP degree: sweep prefill and
    decode, fit a latency model, write entries at each model's SLO (source "measured")."""
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.errors import GpumixError

    try:
        if calibrate_to is not None:
            refuse_package_path(calibrate_to, "--calibrate")
        name_option(CMD, "--gpu-name", gpu_name)
        check_device(CMD, device, dtype)
        from gpumix.profiler.measure.calibrate import write_calibration_record
        from gpumix.profiler.measure.profile import (ProfileOptions, Scale, load_profiled_workload, merge,
                                                     profile_workload)

        opts = ProfileOptions(
            device=device, tp_degrees=positive_ints(tp, CMD, "--tp"), gpu_name=gpu_name, dtype=dtype,
            scale=Scale(scale_layers, scale_hidden, scale_vocab), memory_gb=memory_gb,
            prefill_lens=positive_ints(prefill_lens, CMD, "--prefill-lens"),
            batches=positive_ints(batches, CMD, "--batches"), contexts=positive_ints(contexts, CMD, "--contexts"),
            max_batch=max_batch, iters=iters, rounds=rounds, threads=threads, memory_budget_gb=memory_budget)
        catalog = load_catalog()
        wl = load_profiled_workload(workload, catalog)
        old = _read_table(out_path, "--out")
        runs, calibration = _with_progress(lambda progress: profile_workload(wl, catalog, opts, progress),
                                           quiet)
        if not runs:  # a non-zero torchrun rank: rank 0 writes
            return
        write_json(out_path, merge(old, runs, calibration, CMD))
        if calibrate_to is not None and calibration is not None:
            write_calibration_record(calibrate_to, calibration, runs[0].provenance,
                                     extra={"profiles": [str(out_path)]})
    except GpumixError as e:
        raise fail_run(e) from None
    except OSError as e:
        raise fail_run(cannot_write(out_path, "--out", e)) from None
    if not quiet:
        render.profile_summary(err, runs, calibration, out_path, calibrate_to)


@app.command()
def calibrate(
    profiles: Annotated[Path, typer.Argument(help="A throughput table written by `gpumix profile`.")],
    gpu: Annotated[Optional[str], typer.Option("--gpu", help="GPU type to calibrate (default: every "
                                                              "one the file has measurements for).")] = None,
    out_path: Annotated[Optional[Path], typer.Option(
        "--out", "-o", metavar="FILE", help="Your efficiency file to write (merged into when it exists); "
                                            "plan with `--efficiency FILE`. Default: --efficiency's file, "
                                            "else efficiency.json here.")] = None,
    efficiency: Annotated[Optional[Path], typer.Option(
        "--efficiency", metavar="FILE", help="Efficiency file to merge from (and, without --out, to "
                                             "update). Never the bundled data/efficiency.json.")] = None,
):
    """Refit a GPU type's roofline efficiency factors from the samples a profile file stores and
    write them into your efficiency file (never into the installed package)."""
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.profiler.measure.calibrate import write_calibration_record
    from gpumix.profiler.measure.profile import check_profile_records, refit_calibration

    target = out_path or efficiency or Path("efficiency.json")
    try:
        refuse_package_path(target, "--out" if out_path or not efficiency else "--efficiency")
        doc = _read_table(profiles)
        if doc is None:
            raise InputError(str(profiles), "", "file not found")
        catalog = load_catalog()
        base = efficiency if efficiency is not None and reading.exists(efficiency) else None
        fits = [(name, *refit_calibration(doc, profiles, name, catalog))  # every GPU type fitted before
                for name in ([gpu] if gpu else check_profile_records(doc, profiles))]  # anything is written
        for name, record, provenance in fits:
            write_calibration_record(target, record, provenance, base=base, option="--out",
                                     extra={"profiles": [str(profiles)], "models": record["models"]})
            base = None  # the next GPU type merges into what was just written
            err.print(f"calibration {name}: roofline median error {record['median_error_before']:.0%} -> "
                      f"{record['median_error_after']:.0%} (worst {record['worst_error_before']:.0%} -> "
                      f"{record['worst_error_after']:.0%}); fitted {', '.join(record['fitted']) or 'nothing'}; "
                      f"written to {clean(target)}", markup=False, soft_wrap=True)
    except GpumixError as e:
        raise fail_run(e) from None
    except OSError as e:
        raise fail_run(cannot_write(target, "--out", e)) from None


@app.command("import-vllm")
def import_vllm(
    results: Annotated[list[Path], typer.Argument(help="`vllm bench serve --save-result` JSON files "
                                                  "(one run each, or one run a line from --append-result).")],
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
    quantization: Annotated[str, typer.Option(
        "--quantization", help="The server's weights: none, fp8, int8, awq or gptq (vllm serve "
                               "--quantization, or the checkpoint's).")] = "none",
    kv_cache_dtype: Annotated[str, typer.Option(
        "--kv-cache-dtype", help="The server's KV cache: auto or fp8 (vllm serve --kv-cache-dtype).")] = "auto",
):
    """Turn vLLM serving benchmarks into throughput-table entries (source "vllm"); the entries size
    only the precision the server ran at."""
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.planner.precision import KV_CACHE_DTYPES, QUANTIZATIONS
    from gpumix.profiler.measure import vllm_import as vi
    from gpumix.profiler.measure.profile import merged_table

    try:
        name_option(CMD, "--gpu", gpu)
        name_option(CMD, "--model", model)
        if (ttft_ms is None) != (tpot_ms is None):
            raise InputError(CMD, "--ttft-ms" if ttft_ms is None else "--tpot-ms",
                             "give both --ttft-ms and --tpot-ms")
        catalog = load_catalog()
        skipped: list[str] = []
        runs = [r for p in results for r in vi.read_runs(p, stat, model, input_tokens, output_tokens, skipped)]
        if not runs:
            raise InputError(str(results[0]) if len(results) == 1 else CMD, "failed",
                             "no run without failed requests to import" + (f" ({skipped[0]})" if skipped else ""))
        runs, slo = vi.runs_and_slos(runs, workload, ttft_ms, tpot_ms, catalog)
        new, notes = vi.entries(runs, gpu, tp, slo)
        notes = skipped + notes
        one_of(CMD, "--quantization", quantization, QUANTIZATIONS)
        one_of(CMD, "--kv-cache-dtype", kv_cache_dtype, KV_CACHE_DTYPES)
        precision = {"quantization": quantization, "kv_cache_dtype": kv_cache_dtype}
        if precision != {"quantization": "none", "kv_cache_dtype": "auto"}:
            new = [{**e, **precision} for e in new]
        write_json(out_path, merged_table(_read_table(out_path, "--out") or {}, new, "imports", vi.provenance(runs, stat),
                                           "gpumix profile import-vllm"))
    except GpumixError as e:
        raise fail_run(e) from None
    except OSError as e:
        raise fail_run(cannot_write(out_path, "--out", e)) from None
    for n in notes:
        err.print(clean(f"note: {n}"), markup=False, soft_wrap=True)
    err.print(f"{len(new)} entries from {len(runs)} run(s) written to {clean(out_path)}", markup=False)


@app.command("endpoint")
def profile_endpoint(
    workload: Annotated[Path, typer.Argument(help="Workload: models, buckets and SLOs to measure.")],
    endpoint: Annotated[str, typer.Option("--endpoint", help="OpenAI-compatible server, http://HOST:PORT, optionally with /v1.")],
    gpu_name: Annotated[str, typer.Option("--gpu-name", help="`gpu` of the entries (the server's GPU type).")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="Throughput table to write or merge into.")] = Path("profiles.json"),
    tp: Annotated[int, typer.Option("--tp", min=1, help="The server's tensor-parallel size.")] = 1,
    model: Annotated[Optional[str], typer.Option("--model", help="Profile only this workload model.")] = None,
    endpoint_model: Annotated[Optional[str], typer.Option(
        "--endpoint-model", help="Name the server knows the model by (default: the workload's).")] = None,
    duration: Annotated[float, typer.Option("--duration", min=0.5, help="Seconds of arrivals per tried rate.")] = 10.0,
    start_rps: Annotated[float, typer.Option("--start-rps", min=0.001, help="First rate tried.")] = 1.0,
    max_steps: Annotated[int, typer.Option("--max-steps", min=1, max=30, help="Rates tried per bucket.")] = 8,
    prompt: Annotated[str, typer.Option("--prompt", help="text or tokens.")] = "text",
    api: Annotated[str, typer.Option("--api", help="completions (/v1/completions) or chat "
                                                   "(/v1/chat/completions, one user message).")] = "completions",
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", help="API key, sent as `Authorization: Bearer KEY` (default: $OPENAI_API_KEY).",
        show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
):
    """Measure max req/s per bucket at the SLO against a running OpenAI-compatible server (no
    built-in runtime): a bounded rate search with the validate load generator."""
    from gpumix.planner.errors import GpumixError, InputError
    import os

    from gpumix.profiler.load.client import APIS, Endpoint
    from gpumix.profiler.measure.endpoint import SearchOptions, profile_endpoint_models
    from gpumix.profiler.measure.profile import merged_table

    cmd = "gpumix profile endpoint"
    try:
        one_of(cmd, "--api", api, APIS)
        try:
            ep = Endpoint.parse(endpoint, api_key or os.environ.get("OPENAI_API_KEY"), api)
        except ValueError as e:
            raise InputError(cmd, "--endpoint", str(e)) from None
        one_of(cmd, "--prompt", prompt, ("text", "tokens"))
        if prompt == "tokens" and api == "chat":
            raise InputError(cmd, "--prompt", "tokens needs --api completions: chat messages are text")
        name_option(cmd, "--gpu-name", gpu_name)
        models = _workload_models(workload, model)
        old = _read_table(out_path, "--out") or {}
        opts = SearchOptions(duration_s=duration, drain_s=max(2.0, duration / 2), start_rps=start_rps,
                             max_steps=max_steps, seed=seed)
        new, searches = profile_endpoint_models(ep, models, endpoint_model, prompt, gpu_name, tp, opts,
                                         silent if quiet else dim)
        write_json(out_path, merged_table(old, new, "endpoint_profiles", [
            {"endpoint": ep.base, "duration_s": duration, "searches": searches}], cmd))
    except GpumixError as e:
        raise fail_run(e) from None
    except OSError as e:
        raise fail_run(cannot_write(out_path, "--out", e)) from None
    served = sum(1 for e in new if e["max_rps"] > 0)
    err.print(f"{len(new)} entries ({served} meet the SLO) written to {clean(out_path)}", markup=False)
    if served == 0:
        raise typer.Exit(1)


def _with_progress(work, quiet: bool):
    """work(progress), where progress(label, total) starts a bar and returns its step callback."""
    if quiet:
        return work(lambda label, total: (lambda msg: None))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False) as bar:
        def progress(label: str, total: int):
            task = bar.add_task(clean(label), total=total)
            return lambda msg: bar.advance(task)
        return work(progress)


def _read_table(path: Path, field: str = "") -> Optional[dict]:
    """The throughput table to merge into, None if there is none yet."""
    from gpumix.planner.errors import InputError
    from gpumix.planner.reading import read_json

    if not reading.exists(path):
        return None
    doc = read_json(path, "profiles", field)  # the bounded reader: size, UTF-8, depth, finite numbers
    if not isinstance(doc, dict) or not isinstance(doc.get("entries", []), list):
        raise InputError(str(path), "entries", "cannot merge into it: not a throughput table")
    if field == "--out" and doc.get("entries"):  # merged into: its entries as the planner reads them
        from gpumix.planner.profiles import load_profiles

        load_profiles(path)
    return doc


def _workload_models(workload: Path, model: Optional[str]) -> list:
    """The workload's models, or the one --model names."""
    from gpumix.planner.catalog import load_catalog, norm_name
    from gpumix.planner.errors import InputError
    from gpumix.planner.workload import load_workload

    wl = load_workload(workload, load_catalog(), need_shapes=False)
    models = [m for m in wl.models if model is None or norm_name(m.name) == norm_name(model)]
    if not models:
        raise InputError(str(workload), "models", f"no model named {model!r}")
    return models
