"""A checkpoint's weight format from config.json's `quantization_config`, normalized to the few
formats gpumix plans."""
from __future__ import annotations

from dataclasses import dataclass

from gpumix.planner.reading import quote

REPLAN = "the workload can set `quantization:` to plan another checkpoint"


@dataclass(frozen=True)
class QuantSpec:
    """A checkpoint's weight format, normalized from config.json's `quantization_config`.

    method None: a format gpumix does not plan (bitsandbytes, mxfp4, 8-bit AWQ/GPTQ, ...); `problem`
    says why and `field` names the config field. The config is still read, because a workload's
    `quantization:` may plan another checkpoint of the model; the workload reader decides.
    """

    method: str | None  # "fp8" | "int8" | "awq" | "gptq"
    bits: int | None
    group_size: int | None  # None: per channel or block-wise
    raw_method: str  # quantization_config.quant_method as written
    problem: str = ""
    field: str = ""


def read_quant(cfg: dict) -> QuantSpec | None:
    """Normalize `quantization_config`: fp8; 4-bit awq and gptq; compressed-tensors with 8-bit float
    weights (fp8) or 8-bit int weights and activations (int8). Anything else: method None and the
    problem (see QuantSpec)."""
    qc = cfg.get("quantization_config")
    if qc is None and isinstance(cfg.get("text_config"), dict):
        qc = cfg["text_config"].get("quantization_config")
    if qc is None:
        return None
    f = "quantization_config"
    if not isinstance(qc, dict) or not isinstance(qc.get("quant_method"), str):
        return QuantSpec(None, None, None, "", f"{f}.quant_method is missing; {REPLAN}", f"{f}.quant_method")
    raw = qc["quant_method"]
    method = raw.lower().replace("_", "-")
    if method == "fp8":
        return QuantSpec("fp8", 8, None, raw)
    if method in ("awq", "gptq"):
        bits = qc.get("bits", qc.get("w_bit"))
        group = qc.get("group_size", qc.get("q_group_size"))
        group = group if isinstance(group, int) and not isinstance(group, bool) and group > 0 else None
        if bits == 4 and not isinstance(bits, bool):
            return QuantSpec(method, 4, group, raw)
        return QuantSpec(None, bits if isinstance(bits, int) else None, group, raw,
                         f"{quote(raw)} with {quote(bits)}-bit weights is not a format gpumix plans (4-bit AWQ or "
                         f"GPTQ, FP8, INT8); {REPLAN}", f"{f}.bits")
    if method == "compressed-tensors":
        groups = qc.get("config_groups")
        schemes = list(groups.values()) if isinstance(groups, dict) else []
        weights = [s.get("weights") for s in schemes if isinstance(s, dict)]
        weights = [w for w in weights if isinstance(w, dict)]
        acts = [s.get("input_activations") for s in schemes if isinstance(s, dict)]
        acts = [a if isinstance(a, dict) else {} for a in acts]
        if weights and len(weights) == len(schemes):
            group = weights[0].get("group_size")
            group = group if isinstance(group, int) and group > 0 else None
            if all(w.get("num_bits") == 8 and w.get("type") == "float" for w in weights):
                return QuantSpec("fp8", 8, group, raw)
            if all(w.get("num_bits") == 8 and w.get("type") == "int" for w in weights) and \
                    all(a.get("num_bits") == 8 for a in acts):
                return QuantSpec("int8", 8, group, raw)
        return QuantSpec(None, None, None, raw, f"compressed-tensors checkpoint that is neither FP8 nor "
                         f"INT8 W8A8 is not a format gpumix plans; {REPLAN}", f"{f}.config_groups")
    return QuantSpec(None, None, None, raw, f"quant_method {quote(raw)} is not a format gpumix plans (fp8, awq, "
                     f"gptq, compressed-tensors FP8/INT8); {REPLAN}", f"{f}.quant_method")
