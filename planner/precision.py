"""Precision: how a replica stores its weights and KV cache, and which tensor cores it computes on.

A workload model's `quantization` (none | fp8 | int8 | awq | gptq) and `kv_cache_dtype`
(auto | fp8, vLLM's names) say what is served; a list of either makes precision a decision the
solver takes per replica group. The capacity model reads a Precision in three places:

  weight bytes   linear layers at the method's bits (plus its group scales), embeddings and
                 lm_head at 16 bits (vLLM keeps them unquantized for all five methods);
  KV bytes       2 per element (auto: the model's 16-bit dtype), 1 for fp8;
  compute rate   W8A8 (fp8 on FP8 tensor cores, int8 on INT8 tensor cores) runs at that rate;
                 weight-only kernels (awq, gptq, and fp8 via Marlin where there are no FP8 units)
                 dequantize to 16 bits and run at the BF16/FP16 rate.

Which precision runs where follows vLLM's quantization hardware table (docs/capacity-model.md,
"Precision", cites it). A precision that runs nowhere on a GPU gets a reason, never a guess.
"""
from __future__ import annotations

from dataclasses import dataclass

QUANTIZATIONS = ("none", "fp8", "int8", "awq", "gptq")
KV_CACHE_DTYPES = ("auto", "fp8")
FOUR_BIT = ("awq", "gptq")
DEFAULT_GROUP_SIZE = 128

# arch -> {quantization: kernel}; "w8a8"/"int8" compute on 8-bit tensor cores, "w16" = weight-only
# (16-bit compute), absent = vLLM has no kernel for it. Source: vLLM docs, features/quantization
# "Supported Hardware" (v0.11-v0.15 and latest) and the FP8 W8A8 page (Marlin W8A16 on Turing/Ampere).
SUPPORT: dict[str, dict[str, str]] = {
    "volta": {"none": "w16", "gptq": "w16"},
    "turing": {"none": "w16", "fp8": "w16", "int8": "int8", "awq": "w16", "gptq": "w16"},
    "ampere": {"none": "w16", "fp8": "w16", "int8": "int8", "awq": "w16", "gptq": "w16"},
    "ada": {"none": "w16", "fp8": "fp8", "int8": "int8", "awq": "w16", "gptq": "w16"},
    "hopper": {"none": "w16", "fp8": "fp8", "int8": "int8", "awq": "w16", "gptq": "w16"},
    "blackwell": {"none": "w16", "fp8": "fp8", "int8": "int8", "awq": "w16", "gptq": "w16"},
    "cdna3": {"none": "w16", "fp8": "fp8"},
}
# FP8 KV cache needs the FlashAttention/FlashInfer-class backends of SM 8.0+ (or ROCm on CDNA3).
KV_FP8_ARCHS = frozenset({"ampere", "ada", "hopper", "blackwell", "cdna3"})
ARCHS = tuple(SUPPORT)


@dataclass(frozen=True, order=True)
class Precision:
    quantization: str = "none"
    kv_cache_dtype: str = "auto"
    group_size: int = DEFAULT_GROUP_SIZE  # awq/gptq: weights per scale

    def __post_init__(self):
        if self.quantization not in QUANTIZATIONS:
            raise ValueError(f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {self.quantization!r}")
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype must be one of {', '.join(KV_CACHE_DTYPES)}, "
                             f"got {self.kv_cache_dtype!r}")

    @property
    def linear_bytes(self) -> float:
        """Bytes per parameter of a quantized linear layer, scales included."""
        if self.quantization == "none":
            return 2.0
        if self.quantization in ("fp8", "int8"):
            return 1.0  # per-channel or 128x128-block fp32 scales: < 0.1% more
        # 4-bit weights, one fp16 scale and one 4-bit zero point per group of group_size weights
        return 0.5 + (2.0 + 0.5) / self.group_size

    @property
    def kv_bytes(self) -> float:
        return 1.0 if self.kv_cache_dtype == "fp8" else 2.0

    @property
    def label(self) -> str:
        """Short text for reports: 'bf16', 'fp8', 'awq+kv:fp8'."""
        q = "bf16" if self.quantization == "none" else self.quantization
        return q if self.kv_cache_dtype == "auto" else f"{q}+kv:{self.kv_cache_dtype}"


DEFAULT = Precision()


def kernel(precision: Precision, arch: str) -> str:
    """'w16', 'fp8' or 'int8' (the compute path), or '' where vLLM has no kernel; unknown arch: '' unless none."""
    table = SUPPORT.get(arch)
    if table is None:
        return "w16" if precision.quantization == "none" else ""
    return table.get(precision.quantization, "")


def unsupported(precision: Precision, gpu) -> str:
    """'' if the precision runs on the GPU type, else why not (one line)."""
    arch = getattr(gpu, "arch", "") or ""
    if precision.quantization != "none" and not kernel(precision, arch):
        where = f"{gpu.name} ({arch})" if arch else f"{gpu.name} (architecture unknown)"
        return f"{precision.quantization} weights do not run on {where}: vLLM has no kernel for it"
    if precision.kv_cache_dtype == "fp8" and arch not in KV_FP8_ARCHS:
        where = f"{gpu.name} ({arch})" if arch else f"{gpu.name} (architecture unknown)"
        return f"an fp8 KV cache does not run on {where}"
    return ""


def compute_tflops(precision: Precision, gpu) -> float:
    """Dense tensor rate the GEMMs of this precision run at on this GPU."""
    path = kernel(precision, getattr(gpu, "arch", "") or "")
    if path == "fp8" and getattr(gpu, "fp8_tflops", None):
        return float(gpu.fp8_tflops)
    if path == "int8" and getattr(gpu, "int8_tops", None):
        return float(gpu.int8_tops)
    return float(gpu.bf16_tflops)
