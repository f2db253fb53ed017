"""`gpumix serve`: the built-in runtime behind an OpenAI-compatible HTTP endpoint (FastAPI +
uvicorn: profiler/serve/, docs/serving.md).

  gpumix serve --model M [--model M2 ...] [--workload W] [--tp N] --port P [--api-key KEY]

torch is imported inside the command only: `import gpumix.cli.app` stays torch-free.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from gpumix.cli.common import (DTYPES, RunDtypeOpt, ScaleHiddenOpt, ScaleLayersOpt, ScaleVocabOpt, check_device,
                               clean, fail_run, one_of)

CMD = "gpumix serve"


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
    dtype: RunDtypeOpt = None,
    scale_layers: ScaleLayersOpt = None,
    scale_hidden: ScaleHiddenOpt = None,
    scale_vocab: ScaleVocabOpt = None,
    max_batch: Annotated[Optional[int], typer.Option("--max-batch", min=1, help="KV-cache slots (concurrent "
                                                     "requests; default: the profile's largest batch, else 32 CPU / 256 CUDA).")] = None,
    max_seq: Annotated[int, typer.Option("--max-seq", min=2, help="Tokens per request (prompt + output).")] = 2048,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: the profile's).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Weight seed.")] = 0,
    memory_budget: Annotated[Optional[float], typer.Option(
        "--memory-budget", min=0.01, metavar="GB", help="Refuse, before building anything, a model whose "
        "weights + KV cache (estimated from its shape) exceed this many GB. Default: 80% of the memory "
        "free now (CUDA: the device's).")] = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", help="Require `Authorization: Bearer KEY` on every /v1 route (401 without it); "
                          "/health and /metrics stay open. Default: $GPUMIX_API_KEY, else no key.",
        show_default=False)] = None,
    read_timeout: Annotated[float, typer.Option(
        "--read-timeout", min=0.1, help="Seconds a request (head and body) may take to arrive whole; "
                                        "slower connections are closed.")] = 10.0,
    stall_timeout: Annotated[float, typer.Option(
        "--stall-timeout", min=0.1, help="/health reports 503 when requests are in flight and the "
                                         "engine gave no token for this many seconds.")] = 60.0,
    shutdown_grace: Annotated[float, typer.Option(
        "--shutdown-grace", min=0.0, help="On SIGTERM/SIGINT, seconds streams in flight get to finish; "
                                          "the rest end with an error chunk.")] = 30.0,
    stream_buffer: Annotated[int, typer.Option(
        "--stream-buffer", min=1, help="Tokens a stream may hold for a client that stopped reading "
                                       "before it is cut off (request cancelled, connection closed).")] = 1024,
):
    """Serve the runtime behind an OpenAI-compatible API: /v1/completions and /v1/chat/completions
    (streamed as server-sent events or whole), /v1/models, /health, /metrics (Prometheus, vLLM's
    metric names). Several --model share the device; the request's `model` picks one. Weights are
    random: for load tests, not for answers."""
    import os

    from gpumix.planner.errors import GpumixError, InputError
    from gpumix.profiler.serve.server import Limits

    try:
        one_of(CMD, "--dtype", dtype, DTYPES)
        if served_names and len(served_names) != len(models):
            raise InputError(CMD, "--served-model-name", f"given {len(served_names)} times for "
                             f"{len(models)} --model; give it once per --model, in the same order, or not at all")
        check_device(CMD, device)
        specs = replica_specs(models, served_names, workload, profiles, device, dtype, scale_layers, scale_hidden,
                              scale_vocab, max_batch, max_seq, threads, seed, tp, memory_budget)
        key = api_key or os.environ.get("GPUMIX_API_KEY") or None
        limits = Limits(stream_buffer=stream_buffer, read_timeout_s=read_timeout, stall_s=stall_timeout,
                        shutdown_grace_s=shutdown_grace)
        loop, doors = _serve_loops(specs)
        httpd = _listen(host, port, doors, max_seq, loop, key, limits)
    except GpumixError as e:
        raise fail_run(e) from None
    print(clean(_banner(specs, httpd.url, max_seq, tp) + ("; API key required" if key else "")), flush=True)
    try:
        httpd.serve()  # until SIGTERM/SIGINT: uvicorn drains, then returns
    finally:
        loop.stop()


def register(app: typer.Typer) -> None:
    app.command()(serve)


def _listen(host: str, port: int, doors: dict, max_seq: int, loop, api_key, limits):
    """The HTTP server, bound; the engine loop is stopped when the port cannot be had."""
    from gpumix.planner.errors import InputError
    from gpumix.profiler.serve import server as srv

    try:
        return srv.Server(doors, max_seq, host, port, api_key, limits)
    except OSError as e:
        loop.stop()
        raise InputError(CMD, "--port", f"cannot listen on {host}:{port}: {e.strerror}") from None


def _banner(specs: dict, url: str, max_seq: int, tp: int) -> str:
    """The line on stdout that tells scripts where the server listens."""
    if len(specs) == 1:
        ((name, spec),) = specs.items()
        return (f"gpumix serve: {name} on {url}/v1 ({spec.n_slots} slots, "
                f"{spec.max_seq} tokens each, {spec.dtype}, TP {spec.tp})")
    each = ", ".join(f"{n} ({s.n_slots} slots, {s.dtype})" for n, s in specs.items())
    return f"gpumix serve: {len(specs)} models on {url}/v1, one device: {each}; {max_seq} tokens each, TP {tp}"


def replica_specs(models: list[str], served_names: Optional[list[str]], workload, profiles, device, dtype,
                  layers, hidden, vocab, max_batch, max_seq, threads, seed, tp, memory_budget=None) -> dict:
    """{served name: ReplicaSpec} for each --model (profiler/runtime/spec.py builds them), each
    checked against --tp and the GPUs."""
    from gpumix.planner.errors import InputError
    from gpumix.profiler.runtime.spec import RunOptions, Scale, serve_spec, tp_problem

    opts = RunOptions(device=device, dtype=dtype, max_batch=max_batch, threads=threads, seed=seed,
                      scale=Scale(layers, hidden, vocab))
    specs = {}
    for k, model in enumerate(models):
        spec, name = serve_spec(model, workload, profiles, opts, max_seq, tp)
        name = served_names[k] if served_names else name
        if name in specs:
            raise InputError(CMD, "--served-model-name" if served_names else "--model",
                             f"{name!r} twice: each served model needs its own name")
        why = tp_problem(spec)
        if why:
            raise InputError(CMD, "--tp", why)
        specs[name] = spec
    from gpumix.profiler.runtime.memory import refuse_if_too_large, spec_footprint

    what = next(iter(specs)) if len(specs) == 1 else f"{len(specs)} models ({', '.join(specs)})"
    refuse_if_too_large(CMD, what, [spec_footprint(s) for s in specs.values()], device, memory_budget,
                        same_device=True)
    return specs


def _serve_loops(specs: dict) -> tuple:
    """(loop to stop, {served name: what the server submits to}): profiler/runtime/sharing.py."""
    from gpumix.profiler.runtime.sharing import start_replica

    return start_replica(specs)
