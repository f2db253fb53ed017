"""NVIDIA AIConfigurator's estimates as accuracy points, so bench/accuracy.py needs no AIConfigurator.

  python3.11 -m venv /tmp/aic-venv && /tmp/aic-venv/bin/pip install aiconfigurator
  /tmp/aic-venv/bin/python bench/aiconfigurator_points.py [--points bench/accuracy_points.json]

Runs on CPU (AIC reads its bundled per-GPU kernel databases; nothing is downloaded). For each setup
below it asks `cli_estimate(mode="agg")`, AIC's in-flight-batching estimate with `batch_size`
requests in flight, for TTFT, TPOT and output tokens/s, and rewrites every point of stack
"aiconfigurator" in the points file (the published points are kept as they are). AIC imports
nothing from gpumix and gpumix nothing from AIC: this script runs in AIC's own environment.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import importlib.resources
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

POINTS = Path(__file__).resolve().parent / "accuracy_points.json"
STACK = "aiconfigurator"


@dataclass(frozen=True)
class Setup:
    model: str  # gpumix catalog name
    hf_id: str  # AIC's bundled config: aiconfigurator_core/model_configs/<org>--<name>_config.json
    system: str  # AIC system (per-GPU database)
    gpu: str  # gpumix catalog name of that GPU
    tp: int
    quantization: str  # gpumix: none | fp8
    kv_cache_dtype: str  # gpumix: auto | fp8
    n_in: int
    n_out: int
    concurrency: int
    backend: str = "trtllm"
    moe: bool = False


SETUPS = (
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "h100_sxm", "H100", 1, "fp8", "fp8", 1000, 1000, 1),
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "h100_sxm", "H100", 1, "fp8", "fp8", 1000, 1000, 64),
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "h200_sxm", "H200", 1, "none", "auto", 32, 128, 8),
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "a100_sxm", "A100-80GB", 1, "none", "auto", 1000, 1000, 1),
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "a100_sxm", "A100-80GB", 1, "none", "auto", 1000, 1000, 32),
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "l40s", "L40S", 1, "fp8", "fp8", 1000, 1000, 32),
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "b200_sxm", "B200", 1, "fp8", "fp8", 1000, 1000, 1),
    Setup("llama-3.1-8b", "meta-llama/Meta-Llama-3.1-8B", "b200_sxm", "B200", 1, "fp8", "fp8", 1000, 1000, 64),
    Setup("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "h100_sxm", "H100", 2, "fp8", "fp8", 5000, 500, 1),
    Setup("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "h100_sxm", "H100", 2, "fp8", "fp8", 5000, 500, 50),
    Setup("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "h200_sxm", "H200", 1, "fp8", "fp8", 1000, 1000, 64),
    Setup("llama-3.1-70b", "meta-llama/Meta-Llama-3.1-70B", "b200_sxm", "B200", 2, "fp8", "fp8", 1000, 1000, 64),
    Setup("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1", "h100_sxm", "H100", 2, "fp8", "fp8", 1000, 1000, 64,
          moe=True),
    Setup("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", "h200_sxm", "H200", 1, "fp8", "fp8", 1000, 1000, 64, moe=True),
    Setup("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B", "h200_sxm", "H200", 8, "fp8", "fp8", 1000, 1000, 64,
          moe=True),
)
# gpumix precision -> AIC quant modes (FP8 here means per-tensor W8A8 on FP8 tensor cores)
GEMM = {"none": "bfloat16", "fp8": "fp8"}
KV = {"auto": "bfloat16", "fp8": "fp8"}
SHORT = {"ttft_ms": "ttft", "tpot_ms": "tpot", "output_tokens_per_s": "tps"}


def _model_dir(hf_id: str, tmp: Path) -> str:
    """A local folder holding AIC's bundled config.json, for models AIC would otherwise download."""
    src = importlib.resources.files("aiconfigurator_core") / "model_configs" / f"{hf_id.replace('/', '--')}_config.json"
    folder = tmp / hf_id.replace("/", "--")
    folder.mkdir(exist_ok=True)
    with importlib.resources.as_file(src) as path:
        shutil.copy(path, folder / "config.json")
    return str(folder)


def estimate(s: Setup, tmp: Path) -> list[dict]:
    """AIC's TTFT, TPOT and output tokens/s for one setup, as points (TTFT and TPOT only at batch 1)."""
    from aiconfigurator.cli.api import cli_estimate

    moe = {"moe_quant_mode": GEMM[s.quantization], "moe_tp_size": 1, "moe_ep_size": s.tp} if s.moe else {}
    r = cli_estimate(_model_dir(s.hf_id, tmp), s.system, mode="agg", backend_name=s.backend, isl=s.n_in,
                     osl=s.n_out, batch_size=s.concurrency, tp_size=s.tp, gemm_quant_mode=GEMM[s.quantization],
                     kvcache_quant_mode=KV[s.kv_cache_dtype], **moe)
    version = importlib.metadata.version("aiconfigurator")
    values = {"ttft_ms": float(r.ttft), "tpot_ms": float(r.tpot),
              "output_tokens_per_s": float(r.raw["tokens/s"])}
    if s.concurrency == 1:
        del values["output_tokens_per_s"]  # 1 / TPOT, nothing new
    ep = f", MoE expert-parallel {s.tp}" if s.moe else ""
    source = (f"aiconfigurator {version} cli_estimate(mode='agg'), system {s.system}, backend {r.backend_name} "
              f"{r.backend_version}, model config {s.hf_id} (bundled), gemm {GEMM[s.quantization]}, "
              f"kvcache {KV[s.kv_cache_dtype]}, tp {s.tp}{ep}, batch_size {s.concurrency}")
    base = f"aic-{s.model}-{s.gpu.lower()}-tp{s.tp}-{s.quantization}-{s.n_in}-{s.n_out}-c{s.concurrency}"
    return [dict(id=f"{base}-{SHORT[metric]}", model=s.model, gpu=s.gpu, tp=s.tp,
                 quantization=s.quantization, kv_cache_dtype=s.kv_cache_dtype, input_tokens=s.n_in,
                 output_tokens=s.n_out, concurrency=s.concurrency, metric=metric, value=round(v, 3),
                 stack=STACK, source=source,
                 notes="AIC estimate (kernel-database simulation of in-flight batching), not a measurement")
            for metric, v in values.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=Path, default=POINTS)
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # AIC logs its database fallbacks per query
    doc = json.loads(args.points.read_text())
    kept = [p for p in doc["points"] if p["stack"] != STACK]
    new, failed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for s in SETUPS:
            try:
                new += estimate(s, Path(tmp))
            except Exception as e:  # AIC raises many types for unsupported combinations; report and go on
                failed.append(f"{s.model} {s.system} tp{s.tp} {s.quantization}: {type(e).__name__}: {e}")
    doc["points"] = kept + new
    args.points.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({"aic_points": len(new), "kept": len(kept), "failed": failed}, indent=1))


if __name__ == "__main__":
    main()
