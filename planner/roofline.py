"""Analytic (roofline) capacity estimate: max requests/s of one replica within a TTFT/TPOT SLO.

Formulas and their assumptions are in docs/capacity-model.md; symbols below follow it.
Pure arithmetic on a ModelShape and a GpuSpec: no torch, cheap enough to run for every
model x GPU x TP x bucket of a plan.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gpumix.planner.catalog import GpuSpec, ModelShape

GB = 1e9


@dataclass(frozen=True)
class Efficiency:
    prefill_mfu: float = 0.5
    decode_mfu: float = 0.4
    decode_mbu: float = 0.65
    comm_efficiency: float = 0.7
    allreduce_latency_us: float = 10.0
    step_overhead_ms: float = 1.5
    memory_utilization: float = 0.9
    reserve_gb: float = 1.5
    max_batch: int = 512
    dtype_bytes: int = 2
    kv_dtype_bytes: int = 2

    @classmethod
    def from_dict(cls, d: dict) -> "Efficiency":
        fields = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls, k))(v) for k, v in d.items() if k in fields})


@dataclass(frozen=True)
class Estimate:
    max_rps: float  # 0 when the configuration cannot meet the SLO for this bucket
    batch: int  # steady-state concurrent requests at max_rps
    prefill_ms: float
    step_ms: float  # decode step at `batch`
    ttft_ms: float
    tpot_ms: float
    max_batch_memory: int
    reason: str = ""  # why max_rps is 0


def tp_allowed(shape: ModelShape, gpu: GpuSpec, tp: int) -> str:
    """'' if the TP degree is usable, else why not (heads must split evenly; TP stays in a node)."""
    if tp > gpu.gpus_per_node:
        return f"TP {tp} exceeds {gpu.gpus_per_node} GPUs per {gpu.name} node"
    return shape.tp_problem(tp)


def _allreduce_s(msg_bytes: float, tp: int, gpu: GpuSpec, eff: Efficiency) -> float:
    if tp == 1:
        return 0.0
    wire = 2 * (tp - 1) / tp * msg_bytes / (gpu.interconnect_gbps * GB * eff.comm_efficiency)
    return eff.allreduce_latency_us * 1e-6 + wire


def prefill_s(shape: ModelShape, gpu: GpuSpec, tp: int, n_in: int, eff: Efficiency) -> float:
    """One request's prefill of n_in tokens (T_p)."""
    attn = 2 * shape.num_layers * n_in * n_in * shape.num_heads * shape.head_dim  # causal QK^T + AV
    flops = (2 * shape.active_params * n_in + attn) / tp
    weights = shape.params * eff.dtype_bytes / tp
    compute = flops / (gpu.bf16_tflops * 1e12 * eff.prefill_mfu)
    memory = weights / (gpu.memory_bandwidth_gbps * GB * eff.decode_mbu)
    comm = 2 * shape.num_layers * _allreduce_s(n_in * shape.hidden_size * eff.dtype_bytes, tp, gpu, eff)
    return max(compute, memory) + comm + eff.step_overhead_ms * 1e-3


def decode_step_s(shape: ModelShape, gpu: GpuSpec, tp: int, batch: int, context: float,
                  eff: Efficiency) -> float:
    """One decode step for `batch` running requests of mean context `context` (T_d(b))."""
    if shape.num_experts > 1:  # expected distinct experts touched per layer by `batch` tokens
        k, e = shape.experts_per_token, shape.num_experts
        touched = e * (1 - (1 - k / e) ** batch)
        moe_weights = shape.num_layers * touched * shape.expert_params
        dense = shape.params - shape.num_layers * e * shape.expert_params
        weight_bytes = (dense + moe_weights) * eff.dtype_bytes / tp
    else:
        weight_bytes = shape.params * eff.dtype_bytes / tp
    kv_bytes = batch * context * shape.kv_bytes_per_token(tp, eff.kv_dtype_bytes)
    attn = 4 * shape.num_layers * batch * context * shape.num_heads * shape.head_dim
    flops = (2 * shape.active_params * batch + attn) / tp
    memory = (weight_bytes + kv_bytes) / (gpu.memory_bandwidth_gbps * GB * eff.decode_mbu)
    compute = flops / (gpu.bf16_tflops * 1e12 * eff.decode_mfu)
    comm = 2 * shape.num_layers * _allreduce_s(batch * shape.hidden_size * eff.dtype_bytes, tp, gpu, eff)
    return max(memory, compute) + comm + eff.step_overhead_ms * 1e-3


def max_batch_by_memory(shape: ModelShape, gpu: GpuSpec, tp: int, n_in: int, n_out: int,
                        eff: Efficiency) -> tuple[int, float]:
    """(largest batch whose KV cache fits, free KV bytes per GPU)."""
    weights = shape.params * eff.dtype_bytes / tp
    activations = n_in * (4 * shape.hidden_size + 2 * shape.intermediate_size / tp) * eff.dtype_bytes
    free = gpu.memory_gb * GB * eff.memory_utilization - weights - eff.reserve_gb * GB - activations
    per_request = (n_in + n_out) * shape.kv_bytes_per_token(tp, eff.kv_dtype_bytes)
    if free <= 0:
        return 0, free
    return min(int(free // per_request), eff.max_batch), free


@dataclass(frozen=True)
class Operating:
    """Steady state of one replica at mean batch b (see slo_capacity); times in seconds."""

    rate: float
    batch: int
    step_s: float
    ttft_s: float
    tpot_s: float


def steady_state(t_p: float, t_d: Callable[[int], float], n_out: int, b: int) -> Operating:
    """Little's law at mean batch b: D(b) = n_out T_d(b) + b T_p, r = b / D, M/D/1 prefill queue."""
    step = t_d(b)
    duration = n_out * step + b * t_p
    rate = b / duration
    rho = rate * t_p
    wait = math.inf if rho >= 1 else rho * t_p / (2 * (1 - rho))
    return Operating(rate, b, step, t_p + step + wait, duration / n_out)


def slo_capacity(t_p: float, t_d: Callable[[int], float], n_out: int, ttft_ms: float,
                 tpot_ms: float, b_max: int) -> tuple[Operating, str]:
    """The largest batch <= b_max meeting both SLOs and its rate; (batch-1 state, why) if none does.

    Shared by the roofline estimate and measured profiles (t_p, t_d from a fitted latency model).
    TPOT, TTFT and r all grow with b, so a binary search over b finds the answer.
    """
    def ok(b: int) -> bool:
        s = steady_state(t_p, t_d, n_out, b)
        return s.ttft_s * 1e3 <= ttft_ms and s.tpot_s * 1e3 <= tpot_ms

    one = steady_state(t_p, t_d, n_out, 1)
    if b_max < 1:
        return one, "no room for one request's KV cache"
    if not ok(1):
        if one.ttft_s * 1e3 > ttft_ms:
            return one, f"TTFT {one.ttft_s * 1e3:.0f} ms at batch 1 exceeds the {ttft_ms:g} ms SLO"
        return one, f"TPOT {one.tpot_s * 1e3:.1f} ms at batch 1 exceeds the {tpot_ms:g} ms SLO"
    lo, hi = 1, b_max  # invariant: ok(lo)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return steady_state(t_p, t_d, n_out, lo), ""


def estimate(shape: ModelShape, gpu: GpuSpec, tp: int, n_in: int, n_out: int,
             ttft_ms: float, tpot_ms: float, eff: Efficiency) -> Estimate:
    """Max request rate of one replica for one bucket under the SLO.

    Steady state with continuous batching at mean batch b (Little's law, b = r * D):
      request duration  D(b) = n_out * T_d(b) + b * T_p      (every arrival's prefill stalls decode)
      rate              r(b) = b / D(b)
      TPOT              D(b) / n_out = T_d(b) + b * T_p / n_out
      TTFT              T_p + T_d(b) + W,  W = rho T_p / (2 (1 - rho)),  rho = r T_p   (M/D/1 wait)
    TPOT, TTFT and r all grow with b, so the answer is r at the largest b meeting memory and both SLOs.
    """
    why = tp_allowed(shape, gpu, tp)
    b_mem, free = max_batch_by_memory(shape, gpu, tp, n_in, n_out, eff)
    t_p = prefill_s(shape, gpu, tp, n_in, eff)
    context = n_in + (n_out + 1) / 2

    def t_d(b: int) -> float:
        return decode_step_s(shape, gpu, tp, b, context, eff)

    def zero(reason: str) -> Estimate:
        s = steady_state(t_p, t_d, n_out, 1)
        return Estimate(0.0, 0, t_p * 1e3, s.step_s * 1e3, s.ttft_s * 1e3, s.tpot_s * 1e3,
                        max(b_mem, 0), reason)

    if why:
        return zero(why)
    if b_mem < 1:
        need = shape.params * eff.dtype_bytes / tp / GB
        return zero(f"does not fit: {need:.1f} GB weights per GPU, "
                    f"{max(free, 0) / GB:.1f} GB left for KV cache (< one request)")
    s, why = slo_capacity(t_p, t_d, n_out, ttft_ms, tpot_ms, b_mem)
    if why:
        return zero(why)
    return Estimate(s.rate, s.batch, t_p * 1e3, s.step_s * 1e3, s.ttft_s * 1e3, s.tpot_s * 1e3, b_mem)
