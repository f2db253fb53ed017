"""How a model is run: the one builder of ReplicaSpecs, for `gpumix validate` and `gpumix serve`
alike, so a served model is the model validated and the model profiled.

Per field, the command line wins over the profile's provenance, which wins over the default:
  args     provenance run_args (the shape the profile ran, scaled or not), unless --scale-* is
           given or the profile has none; then the model's shape (workload config, config.json,
           catalog) scaled by --scale-*
  dtype    --dtype > provenance dtype > bf16
  n_slots  --max-batch > the largest batch of the profile's decode sweep > 256 on CUDA, 32 on CPU
  threads  --threads > provenance threads > torch's default (TP: cores / tp)
The profile of a model is the one measured on the same GPU type and TP degree when there is one.

torch is imported by ModelArgs only when a spec is built, so endpoint-mode validation and the
CLI stay torch-free.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gpumix.planner.catalog import Catalog, ModelShape, norm_name
from gpumix.planner.errors import InputError
from gpumix.profiler.runtime.replica import ReplicaSpec


@dataclass(frozen=True)
class Scale:
    """--scale-layers/--scale-hidden/--scale-vocab: a smaller model of the same shape family."""
    layers: int | None = None
    hidden: float | None = None
    vocab: int | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.layers, self.hidden, self.vocab))


@dataclass(frozen=True)
class RunOptions:
    """The command line's say in how models run; None: take it from the profile."""
    device: str = "cpu"
    dtype: str | None = None
    max_batch: int | None = None
    threads: int | None = None
    seed: int = 0
    scale: Scale = Scale()


def runtime_refusal(shape: ModelShape | None, precision=None) -> str:
    """'' if the torch runtime (runtime/model.py: Llama-style GQA, dense or Mixtral-style MoE, in the
    run's dtype) builds this model at this precision, else why not: a run of something else would
    measure another model, so profile, validate and serve refuse instead."""
    if precision is not None and (precision.quantization != "none" or precision.kv_cache_dtype != "auto"):
        return (f"the torch runtime runs unquantized weights and KV cache only, not {precision.label}; "
                "measure it on vLLM (`gpumix profile endpoint`, `profile import-vllm`, `validate --endpoint`)")
    if shape is None:
        return ""
    parts = [("MLA attention", getattr(shape, "is_mla", False)),
             ("shared experts", getattr(shape, "num_shared_experts", 0) or getattr(shape, "shared_expert_intermediate_size", 0)),
             ("dense layers between MoE layers", getattr(shape, "is_moe", False) and shape.moe_layers != shape.num_layers),
             ("sliding-window attention", getattr(shape, "sliding_window", None))]
    missing = [name for name, present in parts if present]
    if missing:
        return (f"the torch runtime does not build {', '.join(missing)} ({shape.name}); measure it on vLLM "
                "(`gpumix profile endpoint`, `profile import-vllm`, `validate --endpoint`)")
    return ""


def refusal_for(m) -> str:
    """runtime_refusal for a workload model: the runtime runs its unquantized precision, so a model
    whose `quantization`/`kv_cache_dtype` leave none is refused."""
    plain = [p for p in m.precisions if p.quantization == "none" and p.kv_cache_dtype == "auto"]
    return runtime_refusal(m.shape, plain[0] if plain else m.precisions[0])


def read_profiles(path: str | None) -> list[dict]:
    """The `profiles` records of a profile file (provenance per model); [] when unreadable."""
    if not path or not Path(path).is_file():
        return []
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [p for p in doc.get("profiles", []) if isinstance(p, dict)] if isinstance(doc, dict) else []


def provenance(profiles: list[dict], model: str, gpu: str | None = None, tp: int | None = None) -> dict:
    """How `model` was profiled ({} if it was not): the profile on `gpu` at `tp` first, if given."""
    mine = [p for p in profiles if norm_name(str(p.get("model"))) == norm_name(model)]
    if gpu is not None:
        mine.sort(key=lambda p: (norm_name(str(p.get("gpu"))) != norm_name(gpu), p.get("tp") != tp))
    return mine[0].get("provenance", {}) if mine else {}


def model_args(prov: dict, opts: RunOptions, shape: ModelShape | None = None, given=None):
    """(ModelArgs, where they came from); given: ModelArgs already read from a config.json.
    LookupError when neither the profile nor a shape says what to build."""
    from gpumix.profiler.runtime.model import ModelArgs

    if prov.get("run_args") and not opts.scale.active:
        return ModelArgs(**prov["run_args"]), "profile provenance"
    if given is None and shape is None:
        raise LookupError("no shape to build the model from")
    args = given if given is not None else ModelArgs.from_shape(shape)
    if opts.scale.active:
        return args.scaled(opts.scale.layers, opts.scale.hidden, opts.scale.vocab), "--scale options"
    return args, "workload shape"


def replica_spec(args, prov: dict, opts: RunOptions, tp: int, max_seq: int) -> ReplicaSpec:
    """The ReplicaSpec of ModelArgs `args` as profiled (`prov`) with the command line's overrides."""
    batches = [d["batch"] for d in (prov.get("sweep") or {}).get("decode", [])]
    default_batch = 256 if opts.device.startswith("cuda") else 32
    return ReplicaSpec(args=args.to_dict(), device=opts.device, dtype=opts.dtype or prov.get("dtype") or "bf16",
                       n_slots=opts.max_batch or (max(batches) if batches else default_batch),
                       max_seq=max_seq, seed=opts.seed, threads=opts.threads or prov.get("threads"), tp=tp)


def spec_record(spec: ReplicaSpec, source: str) -> dict:
    """A validate report's `run`: the spec as built and where its args came from."""
    return {"args": spec.args, "device": spec.device, "tp": spec.tp, "dtype": spec.dtype,
            "n_slots": spec.n_slots, "max_seq": spec.max_seq, "seed": spec.seed,
            "threads": spec.threads, "from": source}


def serve_spec(model: str, workload: Path | None, profiles: Path | None, opts: RunOptions, max_seq: int,
               tp: int = 1, catalog: Catalog | None = None) -> tuple[ReplicaSpec, str]:
    """(spec, served name) of `gpumix serve --model MODEL`: a config.json path (its file stem
    names it; profiles do not apply), or a model of --workload or the catalog (its profile applies)."""
    from gpumix.profiler.runtime.model import ModelArgs

    path = Path(model)
    if path.suffix == ".json" and path.is_file():
        try:
            given = ModelArgs.from_config(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError, ValueError, KeyError) as e:
            raise InputError(model, "", f"not a usable config.json: {e}") from None
        args, _ = model_args({}, opts, given=given)
        return replica_spec(args, {}, opts, tp, max_seq), path.stem
    if catalog is None:
        from gpumix.planner.catalog import load_catalog

        catalog = load_catalog()
    name, shape = model, None
    if workload is not None:
        from gpumix.planner.workload import load_workload

        wl = load_workload(workload, catalog, need_shapes=False)
        m = next((m for m in wl.models if norm_name(m.name) == norm_name(model)), None)
        if m is None:
            raise InputError(str(workload), "models", f"no model named {model!r}")
        shape, name = m.shape, m.name
        why = refusal_for(m)
        if why:
            raise InputError(str(workload), f"models[{wl.models.index(m)}]", why)
    prov = provenance(read_profiles(str(profiles) if profiles else None), name)
    try:
        args, _ = model_args(prov, opts, shape or catalog.model(model))
    except LookupError:
        raise InputError("gpumix serve", "--model", f"unknown model {model!r}: not in the catalog; "
                         "give --workload with its config, or a config.json path") from None
    return replica_spec(args, prov, opts, tp, max_seq), name


def tp_problem(spec: ReplicaSpec) -> str | None:
    """Why the spec cannot run at its TP degree here (heads do not split over the ranks, or fewer
    CUDA devices than ranks), else None."""
    from gpumix.profiler.runtime.model import ModelArgs, head_count_ok

    why = head_count_ok(ModelArgs(**spec.args), spec.tp)
    if why:
        return why
    if spec.device.startswith("cuda"):
        import torch

        base = int(spec.device.partition(":")[2] or 0)
        if base + spec.tp > torch.cuda.device_count():
            return f"needs GPUs {base}..{base + spec.tp - 1}, torch sees {torch.cuda.device_count()}"
    return None
