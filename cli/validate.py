"""`gpumix validate`: run a plan's replica groups under their planned load and hold them to the SLO.

  gpumix validate PLAN.json [WORKLOAD] --device cpu|cuda [--gpu-name NAME] [--duration S] [--report R.json]
  gpumix validate PLAN.json --endpoint http://HOST:PORT [--api completions|chat] [--api-key KEY] ...

Exit codes: 0 every validated group held; 1 a group failed, or nothing was validated; 2 bad input.
torch is imported inside the command only: `import gpumix.cli.app` stays torch-free.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpumix.cli import render
from gpumix.cli.common import (DTYPES, RunDtypeOpt, ScaleHiddenOpt, ScaleLayersOpt, ScaleVocabOpt, cannot_write,
                               check_device, dim, fail_run, one_of, out, report_verdict, silent, write_json)

CMD = "gpumix validate"


def validate(
    plan_file: Annotated[Path, typer.Argument(help="Plan JSON written by `gpumix plan --out`.", metavar="PLAN")],
    workload: Annotated[Optional[Path], typer.Argument(
        help="Workload (SLOs, buckets, model shapes). Default: the plan's inputs.workload.",
        show_default=False, metavar="WORKLOAD")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda (in-process replicas).")] = "cpu",
    gpu_name: Annotated[Optional[str], typer.Option(
        "--gpu-name", help="GPU type this machine (or the --endpoint) stands for; groups of other "
                           "types are skipped. Default: the detected device name.")] = None,
    duration: Annotated[float, typer.Option("--duration", min=0.5, help="Seconds of arrivals per group.")] = 10.0,
    report_path: Annotated[Optional[Path], typer.Option("--report", help="Write the report JSON here "
                                                        "(after every group, so a cut-short run keeps its results).")] = None,
    endpoint: Annotated[Optional[str], typer.Option(
        "--endpoint", help="Drive this OpenAI-compatible server (http://HOST:PORT, optionally with /v1) instead of "
                           "in-process replicas: vLLM, SGLang, TGI or `gpumix serve`.")] = None,
    endpoint_model: Annotated[Optional[str], typer.Option(
        "--endpoint-model", help="Model name the server knows (default: the plan's model name).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Validate only this model's groups.")] = None,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Replicas to run per group (each at the "
                                                                    "per-replica load; capped at the group's count).")] = 1,
    arrivals: Annotated[str, typer.Option("--arrivals", help="poisson, or gamma (burstier; see --gamma-shape).")] = "poisson",
    gamma_shape: Annotated[float, typer.Option("--gamma-shape", min=0.01, help="Gamma shape of the gaps "
                                                                                "(< 1: burstier).")] = 0.5,
    seed: Annotated[int, typer.Option("--seed", help="Arrival and prompt seed.")] = 0,
    drain: Annotated[Optional[float], typer.Option(
        "--drain", min=0.0, help="Seconds to wait for stragglers after the last arrival (default "
                                 "max(5, duration)); unfinished requests count as failed.")] = None,
    profiles: Annotated[Optional[Path], typer.Option(
        "--profiles", help="Profile file to take the run shape (scaling), dtype, threads and max batch "
                           "from. Default: the plan's inputs.profiles.")] = None,
    scale_layers: ScaleLayersOpt = None,
    scale_hidden: ScaleHiddenOpt = None,
    scale_vocab: ScaleVocabOpt = None,
    dtype: RunDtypeOpt = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, help="KV-cache slots per replica "
                                                     "(default: the profile's largest batch, else 32 CPU / 256 CUDA).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads per replica "
                                                   "(default: the profile's).")] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="Endpoint prompts: text (repeated word) or tokens (id lists).")] = "text",
    api: Annotated[str, typer.Option("--api", help="Endpoint API: completions (/v1/completions) or chat "
                                                   "(/v1/chat/completions, one user message).")] = "completions",
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", help="Endpoint API key, sent as `Authorization: Bearer KEY` (default: $OPENAI_API_KEY).",
        show_default=False)] = None,
    memory_budget: Annotated[Optional[float], typer.Option(
        "--memory-budget", min=0.01, metavar="GB", help="Refuse, before building anything, a model whose "
        "weights + KV cache (estimated from its shape) exceed this many GB. Default: 80% of the memory "
        "free now (CUDA: the device's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
):
    """Run the plan's replica groups under their planned load (seeded Poisson or gamma arrivals,
    the plan's bucket mix) and report TTFT/TPOT, achieved rate and SLO attainment against the plan."""
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.profiler.load.client import APIS
    from gpumix.profiler.validate.run import ValidateOptions, validate as run_validate

    try:
        one_of(CMD, "--arrivals", arrivals, ("poisson", "gamma"))
        one_of(CMD, "--prompt", prompt, ("text", "tokens"))
        one_of(CMD, "--api", api, APIS)
        if prompt == "tokens" and api == "chat":
            raise InputError(CMD, "--prompt", "tokens needs --api completions: chat messages are text")
        one_of(CMD, "--dtype", dtype, DTYPES)
        if endpoint is None:
            check_device(CMD, device)
        opts = ValidateOptions(
            device=device, gpu_name=gpu_name, duration_s=duration, drain_s=drain, arrivals=arrivals,
            gamma_shape=gamma_shape, seed=seed, replicas=replicas, model=model, endpoint=endpoint,
            endpoint_model=endpoint_model, prompt=prompt, api=api,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or None, profiles=str(profiles) if profiles else None,
            scale_layers=scale_layers, scale_hidden=scale_hidden, scale_vocab=scale_vocab, dtype=dtype,
            max_batch=max_batch, threads=threads, memory_budget_gb=memory_budget)

        def write(doc: dict) -> None:  # after every group, so a cut-short run keeps its results
            if report_path is not None:
                write_json(report_path, doc)

        report = run_validate(plan_file, workload, opts, write, silent if quiet else dim)
    except GpumixError as e:
        raise fail_run(e) from None
    except OSError as e:
        raise fail_run(cannot_write(report_path, "--report", e)) from None
    render.validate_report(out, report)
    report_verdict(report, report_path)


def register(app: typer.Typer) -> None:
    app.command()(validate)
