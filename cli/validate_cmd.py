"""`gpumix validate`, `gpumix serve` and `gpumix profile endpoint`.

  gpumix validate PLAN.json [WORKLOAD] --device cpu|cuda [--gpu-name NAME] [--duration S] [--report R.json]
  gpumix validate PLAN.json --endpoint http://HOST:PORT [--gpu-name NAME] ...
  gpumix serve --model M [--model M2 ...] [--workload W] [--tp N] --port P
  gpumix profile endpoint WORKLOAD --endpoint URL --gpu-name NAME --out PROFILES.json

Exit codes: 0 every validated group held; 1 a group failed, or nothing was validated; 2 bad input.
torch is imported inside the commands only: `import gpumix.cli.app` stays torch-free.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from gpumix.cli.profile_cmd import profile_app

err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def _fail(e: Exception) -> typer.Exit:
    code = getattr(e, "exit_code", 1)
    err.print(f"gpumix: {'error' if code == 2 else 'failed'}: {e}", markup=False, soft_wrap=True)
    return typer.Exit(code)


def _torch_or_fail(cmd: str) -> None:
    from gpumix.planner.errors import InputError

    try:
        import torch  # noqa: F401
    except ImportError:
        raise InputError(cmd, "", "needs torch: pip install 'gpumix[runtime]'") from None


def _check_device(cmd: str, device: str) -> None:
    from gpumix.planner.errors import InputError

    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(cmd, "--device", f"must be cpu or cuda, got {device!r}")
    _torch_or_fail(cmd)
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(cmd, "--device", "cuda requested but torch sees no GPU")


def _ms(p: Optional[dict], key: str) -> str:
    v = (p or {}).get(key)
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def render_report(console: Console, report: dict) -> None:
    t = Table(title=f"validate {report['plan']} ({report['mode']}, {report['load']['arrivals']} arrivals, "
                    f"{report['load']['duration_s']:g} s)", title_justify="left", show_edge=False, pad_edge=False)
    for col, just in (("model", "left"), ("GPU", "left"), ("TP", "right"), ("run/count", "right"),
                      ("planned req/s", "right"), ("achieved", "right"), ("TTFT p50/p99 ms", "right"),
                      ("TPOT p50/p99 ms", "right"), ("in SLO", "right"), ("result", "left")):
        t.add_column(col, justify=just)
    for g in report["groups"]:
        result = {"passed": "[green]passed[/green]", "failed": "[red]FAILED[/red]",
                  "error": "[red]ERROR[/red]", "skipped": "[dim]skipped[/dim]"}[g["status"]]
        measured = g["status"] != "skipped" and "achieved_rps" in g
        name = g["model"] + (f" (shared[{g['shared']}])" if "shared" in g else "")
        t.add_row(name, g["gpu"], str(g["tp"]), f"{g.get('replicas_run', 0)}/{g['count']}",
                  f"{g['planned_rps']:,.2f}",
                  f"{g['achieved_rps']:,.2f}" if measured else "-",
                  f"{_ms(g.get('ttft_ms'), 'p50')} / {_ms(g.get('ttft_ms'), 'p99')}" if measured else "-",
                  f"{_ms(g.get('tpot_ms'), 'p50')} / {_ms(g.get('tpot_ms'), 'p99')}" if measured else "-",
                  f"{g['slo_attainment']:.1%}" if measured else "-", result)
    console.print(t)
    for g in report["groups"]:
        if g["status"] == "skipped":
            console.print(f"skipped {g['model']} on {g['gpu']} TP{g['tp']}: {g['reasons'][0]}", markup=False)
    for s in report.get("shared", []):
        console.print(f"shared[{s['index']}] ({' + '.join(s['models'])}) on {s['gpu']} TP{s['tp']}: "
                      f"{s['status']}, planned time use {s['planned_utilization']} per set"
                      + (f", plan memory {s['memory_gb_per_gpu']} GB per GPU" if s.get("memory_gb_per_gpu") else ""),
                      markup=False)
    verdict = "[green]PASSED[/green]" if report["passed"] else "[red]FAILED[/red]"
    console.print(f"{verdict}: {report['validated']} group(s) validated, {report['skipped']} skipped")


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
    scale_layers: Annotated[Optional[int], typer.Option("--scale-layers", min=1, help="As in `gpumix profile`.")] = None,
    scale_hidden: Annotated[Optional[float], typer.Option("--scale-hidden", min=0.01, max=1.0,
                                                         help="As in `gpumix profile`.")] = None,
    scale_vocab: Annotated[Optional[int], typer.Option("--scale-vocab", min=16, help="As in `gpumix profile`.")] = None,
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="bf16, fp16 or fp32 (default: the profile's, else bf16).")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, help="KV-cache slots per replica "
                                                     "(default: the profile's largest batch, else 32 CPU / 256 CUDA).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads per replica "
                                                   "(default: the profile's).")] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="Endpoint prompts: text (repeated word) or tokens (id lists).")] = "text",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")] = False,
):
    """Run the plan's replica groups under their planned load (seeded Poisson or gamma arrivals,
    the plan's bucket mix) and report TTFT/TPOT, achieved rate and SLO attainment against the plan."""
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.planner.plan import write_atomic
    from gpumix.profiler.validate.run import ValidateOptions, validate as run_validate

    try:
        if arrivals not in ("poisson", "gamma"):
            raise InputError("gpumix validate", "--arrivals", f"must be poisson or gamma, got {arrivals!r}")
        if prompt not in ("text", "tokens"):
            raise InputError("gpumix validate", "--prompt", f"must be text or tokens, got {prompt!r}")
        if dtype is not None and dtype not in ("bf16", "fp16", "fp32"):
            raise InputError("gpumix validate", "--dtype", f"must be bf16, fp16 or fp32, got {dtype!r}")
        if endpoint is None:
            _check_device("gpumix validate", device)
        opts = ValidateOptions(
            device=device, gpu_name=gpu_name, duration_s=duration, drain_s=drain, arrivals=arrivals,
            gamma_shape=gamma_shape, seed=seed, replicas=replicas, model=model, endpoint=endpoint,
            endpoint_model=endpoint_model, prompt=prompt, profiles=str(profiles) if profiles else None,
            scale_layers=scale_layers, scale_hidden=scale_hidden, scale_vocab=scale_vocab, dtype=dtype,
            max_batch=max_batch, threads=threads)

        def write(doc: dict) -> None:
            if report_path is not None:
                write_atomic(report_path, json.dumps(doc, indent=2) + "\n")

        progress = (lambda msg: None) if quiet else (lambda msg: err.print(f"[dim]{msg}[/dim]"))
        report = run_validate(plan_file, workload, opts, write, progress)
    except GpumixError as e:
        raise _fail(e) from None
    except OSError as e:
        from gpumix.planner.errors import InputError as IE
        raise _fail(IE(str(report_path), "--report", f"cannot write: {e.strerror}")) from None
    render_report(out, report)
    for note in report["notes"]:
        err.print(f"note: {note}", markup=False, soft_wrap=True)
    for f in report["failures"]:
        err.print(f"gpumix: failed: {f}", markup=False, soft_wrap=True)
    if report_path is not None:
        err.print(f"report written to {report_path}", markup=False)
    if not report["passed"]:
        raise typer.Exit(1)


def serve(
    models: Annotated[list[str], typer.Option("--model", help="Model name (catalog, or a model of --workload) or a "
                                                            "config.json path; repeat to serve several models "
                                                            "on one device.")],
    workload: Annotated[Optional[Path], typer.Option("--workload", help="Resolve --model here (its `config`).")] = None,
    profiles: Annotated[Optional[Path], typer.Option(
        "--profiles", help="Run the model as this profile ran it (provenance run_args, dtype, threads).")] = None,
    tp: Annotated[int, typer.Option("--tp", min=1, help="Tensor-parallel degree: this process is rank 0 "
                                                      "(engine and HTTP), tp - 1 spawned worker ranks.")] = 1,
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port; 0 picks a free one "
                                                                      "(printed on stdout).")] = 8000,
    served_names: Annotated[Optional[list[str]], typer.Option(
        "--served-model-name", help="Name in the API (default: --model); with several models, one per "
                                    "--model in the same order.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    dtype: Annotated[Optional[str], typer.Option("--dtype", help="bf16, fp16 or fp32 (default: the profile's, else bf16).")] = None,
    scale_layers: Annotated[Optional[int], typer.Option("--scale-layers", min=1, help="As in `gpumix profile`.")] = None,
    scale_hidden: Annotated[Optional[float], typer.Option("--scale-hidden", min=0.01, max=1.0,
                                                         help="As in `gpumix profile`.")] = None,
    scale_vocab: Annotated[Optional[int], typer.Option("--scale-vocab", min=16, help="As in `gpumix profile`.")] = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, help="KV-cache slots (concurrent "
                                                     "requests; default: the profile's largest batch, else 32 CPU / 256 CUDA).")] = None,
    max_seq: Annotated[int, typer.Option("--max-seq", min=2, help="Tokens per request (prompt + output).")] = 2048,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: the profile's).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Weight seed.")] = 0,
):
    """Serve the runtime behind an OpenAI-compatible /v1/completions endpoint (streaming via
    server-sent events) on localhost; several --model share the device, the request's `model`
    picks one. Weights are random: for load tests, not for answers."""
    from gpumix.planner.errors import GpumixError, InputError

    try:
        if dtype is not None and dtype not in ("bf16", "fp16", "fp32"):
            raise InputError("gpumix serve", "--dtype", f"must be bf16, fp16 or fp32, got {dtype!r}")
        if served_names and len(served_names) != len(models):
            raise InputError("gpumix serve", "--served-model-name", f"given {len(served_names)} times for "
                             f"{len(models)} --model; give it once per --model, in the same order, or not at all")
        _check_device("gpumix serve", device)
        specs = {}  # served name -> ReplicaSpec
        for k, model in enumerate(models):
            spec, name = _serve_spec(model, workload, profiles, device, dtype, scale_layers, scale_hidden,
                                     scale_vocab, max_batch, max_seq, threads, seed, tp)
            name = served_names[k] if served_names else name
            if name in specs:
                raise InputError("gpumix serve", "--served-model-name" if served_names else "--model",
                                 f"{name!r} twice: each served model needs its own name")
            _check_tp("gpumix serve", spec)
            specs[name] = spec
        from gpumix.profiler.serve import server as srv

        loop, doors = _serve_loops(specs)
        try:
            httpd = srv.Server((host, port), doors, max_seq)
        except OSError as e:
            loop.stop()
            raise InputError("gpumix serve", "--port", f"cannot listen on {host}:{port}: {e.strerror}") from None
    except GpumixError as e:
        raise _fail(e) from None
    if len(specs) == 1:
        ((name, spec),) = specs.items()
        print(f"gpumix serve: {name} on {httpd.url}/v1 ({spec.n_slots} slots, "
              f"{spec.max_seq} tokens each, {spec.dtype}, TP {spec.tp})", flush=True)
    else:
        each = ", ".join(f"{n} ({s.n_slots} slots, {s.dtype})" for n, s in specs.items())
        print(f"gpumix serve: {len(specs)} models on {httpd.url}/v1, one device: {each}; "
              f"{max_seq} tokens each, TP {tp}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        loop.stop()


def _serve_loops(specs: dict) -> tuple:
    """(loop to stop, {served name: what the server submits to}): profiler/runtime/sharing.py."""
    from gpumix.profiler.runtime.sharing import start_replica

    return start_replica(specs)


def _check_tp(cmd: str, spec) -> None:
    """The model splits over --tp ranks, and on CUDA there is a GPU for each."""
    from gpumix.planner.errors import InputError
    from gpumix.profiler.runtime.model import ModelArgs, head_count_ok

    why = head_count_ok(ModelArgs(**spec.args), spec.tp)
    if why:
        raise InputError(cmd, "--tp", why)
    if spec.device.startswith("cuda"):
        import torch

        base = int(spec.device.partition(":")[2] or 0)
        if base + spec.tp > torch.cuda.device_count():
            raise InputError(cmd, "--tp", f"needs GPUs {base}..{base + spec.tp - 1}, torch sees "
                                          f"{torch.cuda.device_count()}")


def _serve_spec(model, workload, profiles, device, dtype, layers, hidden, vocab, max_batch, max_seq,
                threads, seed, tp=1):
    """(ReplicaSpec, served name): the one spec builder, profiler/runtime/spec.py."""
    from gpumix.profiler.runtime.spec import RunOptions, serve_spec

    opts = RunOptions(device=device, dtype=dtype, max_batch=max_batch, threads=threads, seed=seed,
                      scale_layers=layers, scale_hidden=hidden, scale_vocab=vocab)
    return serve_spec(model, workload, profiles, opts, max_seq, tp)


@profile_app.command("endpoint")
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
    seed: Annotated[int, typer.Option("--seed")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q")] = False,
):
    """Measure max req/s per bucket at the SLO against a running OpenAI-compatible server (no
    built-in runtime): a bounded rate search with the validate load generator."""
    from gpumix.planner.catalog import load_catalog, norm_name
    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.planner.plan import write_atomic
    from gpumix.planner.workload import load_workload
    from gpumix.profiler.load.client import Endpoint, EndpointBackend
    from gpumix.profiler.measure.endpoint import SearchOptions, profile_model
    from gpumix.profiler.measure.profile import entry_key

    try:
        try:
            ep = Endpoint.parse(endpoint)
        except ValueError as e:
            raise InputError("gpumix profile endpoint", "--endpoint", str(e)) from None
        if prompt not in ("text", "tokens"):
            raise InputError("gpumix profile endpoint", "--prompt", f"must be text or tokens, got {prompt!r}")
        wl = load_workload(workload, load_catalog(), need_shapes=False)
        models = [m for m in wl.models if model is None or norm_name(m.name) == norm_name(model)]
        if not models:
            raise InputError(str(workload), "models", f"no model named {model!r}")
        old = {}
        if out_path.exists():
            try:
                old = json.loads(out_path.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise InputError(str(out_path), "", f"cannot merge into it: {e}") from None
        opts = SearchOptions(duration_s=duration, drain_s=max(2.0, duration / 2), start_rps=start_rps,
                             max_steps=max_steps, seed=seed)
        progress = (lambda msg: None) if quiet else (lambda msg: err.print(f"[dim]{msg}[/dim]"))
        new, searches = [], []
        for m in models:
            backend = EndpointBackend(ep, endpoint_model or m.name, prompt)
            e, s = profile_model(backend, m, gpu_name, tp, opts, progress)
            new += e
            searches += s
        fresh = {entry_key(e) for e in new}
        doc = {**old, "entries": [e for e in old.get("entries", []) if entry_key(e) not in fresh] + new}
        doc["endpoint_profiles"] = old.get("endpoint_profiles", []) + [
            {"endpoint": ep.base, "duration_s": duration, "searches": searches}]
        doc.setdefault("generator", "gpumix profile endpoint")
        write_atomic(out_path, json.dumps(doc, indent=2) + "\n")
    except GpumixError as e:
        raise _fail(e) from None
    except OSError as e:
        raise _fail(InputError(str(out_path), "--out", f"cannot write: {e.strerror}")) from None
    served = sum(1 for e in new if e["max_rps"] > 0)
    err.print(f"{len(new)} entries ({served} meet the SLO) written to {out_path}", markup=False)
    if served == 0:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(serve)

