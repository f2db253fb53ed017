"""`gpumix serve`: the built-in runtime behind an OpenAI-compatible HTTP endpoint.

  gpumix serve --model M [--model M2 ...] [--workload W] [--tp N] --port P

torch is imported inside the command only: `import gpumix.cli.app` stays torch-free.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from gpumix.cli.common import (DTYPES, RunDtypeOpt, ScaleHiddenOpt, ScaleLayersOpt, ScaleVocabOpt, check_device,
                               fail_run, one_of)

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
):
    """Serve the runtime behind an OpenAI-compatible /v1/completions endpoint (streaming via
    server-sent events) on localhost; several --model share the device, the request's `model`
    picks one. Weights are random: for load tests, not for answers."""
    from gpumix.planner.errors import GpumixError, InputError

    try:
        one_of(CMD, "--dtype", dtype, DTYPES)
        if served_names and len(served_names) != len(models):
            raise InputError(CMD, "--served-model-name", f"given {len(served_names)} times for "
                             f"{len(models)} --model; give it once per --model, in the same order, or not at all")
        check_device(CMD, device)
        specs = replica_specs(models, served_names, workload, profiles, device, dtype, scale_layers, scale_hidden,
                              scale_vocab, max_batch, max_seq, threads, seed, tp)
        loop, doors = _serve_loops(specs)
        httpd = _listen(host, port, doors, max_seq, loop)
    except GpumixError as e:
        raise fail_run(e) from None
    print(_banner(specs, httpd.url, max_seq, tp), flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        loop.stop()


def register(app: typer.Typer) -> None:
    app.command()(serve)


def _listen(host: str, port: int, doors: dict, max_seq: int, loop):
    """The HTTP server, bound; the engine loop is stopped when the port cannot be had."""
    from gpumix.planner.errors import InputError
    from gpumix.profiler.serve import server as srv

    try:
        return srv.Server((host, port), doors, max_seq)
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


# -- domain logic to move down into profiler/runtime/ (edited elsewhere) ------------------------------
# The profiler engineer is unifying replica-spec building in profiler/runtime/: repoint
# replica_specs at it (one call) and delete _serve_spec and _check_tp.

def replica_specs(models: list[str], served_names: Optional[list[str]], workload, profiles, device, dtype,
                  layers, hidden, vocab, max_batch, max_seq, threads, seed, tp) -> dict:
    """{served name: ReplicaSpec} for each --model, each checked against --tp and the GPUs."""
    from gpumix.planner.errors import InputError

    specs = {}
    for k, model in enumerate(models):
        spec, name = _serve_spec(model, workload, profiles, device, dtype, layers, hidden, vocab, max_batch,
                                 max_seq, threads, seed, tp)
        name = served_names[k] if served_names else name
        if name in specs:
            raise InputError(CMD, "--served-model-name" if served_names else "--model",
                             f"{name!r} twice: each served model needs its own name")
        _check_tp(CMD, spec)
        specs[name] = spec
    return specs


def _serve_loops(specs: dict) -> tuple:
    """(loop to stop, {served name: what the server submits to}): one EngineLoop for one model,
    one SharedLoop (profiler/runtime/sharing.py) and a Member per model for several.
    To move down: profiler/runtime/, beside build_shared."""
    from gpumix.profiler.runtime.replica import EngineLoop, build_engine
    from gpumix.profiler.runtime.sharing import build_shared

    if len(specs) == 1:
        ((name, spec),) = specs.items()
        loop = EngineLoop(build_engine(spec), spec.args["vocab"]).start()
        return loop, {name: loop}
    loop = build_shared(specs).start()
    return loop, {name: loop.member(name) for name in specs}


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
    """(ReplicaSpec, served name) for one --model: a config.json, or a catalog or workload model run
    as its profile ran it (provenance run_args, dtype, threads, largest batch)."""
    from gpumix.planner.catalog import load_catalog, norm_name
    from gpumix.planner.errors import InputError
    from gpumix.profiler.runtime.replica import ReplicaSpec
    from gpumix.profiler.runtime.model import ModelArgs
    from gpumix.profiler.validate.run import read_profiles

    path = Path(model)
    name = model
    args = prov = None
    if path.suffix == ".json" and path.is_file():
        try:
            args = ModelArgs.from_config(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, ValueError, KeyError) as e:
            raise InputError(model, "", f"not a usable config.json: {e}") from None
        name = path.stem
    else:
        catalog = load_catalog()
        shape = None
        if workload is not None:
            from gpumix.planner.workload import load_workload

            wl = load_workload(workload, catalog, need_shapes=False)
            m = next((m for m in wl.models if norm_name(m.name) == norm_name(model)), None)
            if m is None:
                raise InputError(str(workload), "models", f"no model named {model!r}")
            shape, name = m.shape, m.name
        shape = shape or catalog.model(model)
        mine = [p for p in read_profiles(str(profiles) if profiles else None)
                if norm_name(str(p.get("model"))) == norm_name(name)]
        prov = mine[0].get("provenance", {}) if mine else {}
        if prov.get("run_args") and not any(v is not None for v in (layers, hidden, vocab)):
            args = ModelArgs(**prov["run_args"])
        elif shape is not None:
            args = ModelArgs.from_shape(shape)
        else:
            raise InputError(CMD, "--model", f"unknown model {model!r}: not in the catalog; "
                             "give --workload with its config, or a config.json path")
    if args is not None and any(v is not None for v in (layers, hidden, vocab)):
        args = args.scaled(layers, hidden, vocab)
    prov = prov or {}
    batches = [d["batch"] for d in (prov.get("sweep") or {}).get("decode", [])]
    return ReplicaSpec(args=args.to_dict(), device=device, dtype=dtype or prov.get("dtype") or "bf16",
                       n_slots=max_batch or (max(batches) if batches else (256 if device.startswith("cuda") else 32)),
                       max_seq=max_seq, seed=seed, threads=threads or prov.get("threads"), tp=tp), name
