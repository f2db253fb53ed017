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
from gpumix.planner.precision import DEFAULT, Precision, compute_tflops, unsupported

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


def weight_bytes(shape: ModelShape, tp: int, eff: Efficiency, precision: Precision = DEFAULT) -> float:
    """Weights on one GPU of a TP group (W_g): linear layers at the precision's bytes (the model's
    dtype, `dtype_bytes`, when unquantized), embeddings and lm_head at `dtype_bytes`."""
    linear = eff.dtype_bytes if precision.quantization == "none" else precision.linear_bytes
    return shape.weight_bytes_per_gpu(tp, linear, eff.dtype_bytes)


def kv_element_bytes(eff: Efficiency, precision: Precision = DEFAULT) -> float:
    return precision.kv_bytes if precision.kv_cache_dtype != "auto" else eff.kv_dtype_bytes


def _tflops(gpu: GpuSpec, precision: Precision) -> float:
    return compute_tflops(precision, gpu) * 1e12


def prefill_s(shape: ModelShape, gpu: GpuSpec, tp: int, n_in: int, eff: Efficiency,
              precision: Precision = DEFAULT) -> float:
    """One request's prefill of n_in tokens (T_p)."""
    flops = (2 * shape.active_params * n_in + shape.attention_flops(n_in, n_in / 2)) / tp
    compute = flops / (_tflops(gpu, precision) * eff.prefill_mfu)
    memory = weight_bytes(shape, tp, eff, precision) / (gpu.memory_bandwidth_gbps * GB * eff.decode_mbu)
    comm = 2 * shape.num_layers * _allreduce_s(n_in * shape.hidden_size * eff.dtype_bytes, tp, gpu, eff)
    return max(compute, memory) + comm + eff.step_overhead_ms * 1e-3


def decode_step_s(shape: ModelShape, gpu: GpuSpec, tp: int, batch: int, context: float,
                  eff: Efficiency, precision: Precision = DEFAULT) -> float:
    """One decode step for `batch` running requests of mean context `context` (T_d(b))."""
    weights = weight_bytes(shape, tp, eff, precision)
    if shape.is_moe:  # only the experts some token of the batch routes to are read
        k, e = shape.experts_per_token, shape.num_experts
        untouched = e - e * (1 - (1 - k / e) ** batch)
        linear = eff.dtype_bytes if precision.quantization == "none" else precision.linear_bytes
        weights -= shape.moe_layers * untouched * shape.routed_expert_params * linear / tp
    kv_bytes = batch * shape.kv_bytes_per_sequence(tp, context, kv_element_bytes(eff, precision))
    flops = (2 * shape.active_params * batch + batch * shape.attention_flops(1, context)) / tp
    memory = (weights + kv_bytes) / (gpu.memory_bandwidth_gbps * GB * eff.decode_mbu)
    compute = flops / (_tflops(gpu, precision) * eff.decode_mfu)
    comm = 2 * shape.num_layers * _allreduce_s(batch * shape.hidden_size * eff.dtype_bytes, tp, gpu, eff)
    return max(memory, compute) + comm + eff.step_overhead_ms * 1e-3


def kv_budget_bytes(shape: ModelShape, gpu: GpuSpec, tp: int, n_in: int, eff: Efficiency,
                    precision: Precision = DEFAULT) -> float:
    """Bytes per GPU left for the KV cache after weights, one prefill's activations and the reserve
    (negative when the weights do not fit)."""
    activations = n_in * (4 * shape.hidden_size + 2 * shape.intermediate_size / tp) * eff.dtype_bytes
    return (gpu.memory_gb * GB * eff.memory_utilization - weight_bytes(shape, tp, eff, precision)
            - eff.reserve_gb * GB - activations)


def max_batch_by_memory(shape: ModelShape, gpu: GpuSpec, tp: int, n_in: int, n_out: int,
                        eff: Efficiency, precision: Precision = DEFAULT) -> tuple[int, float]:
    """(largest batch whose KV cache fits, free KV bytes per GPU)."""
    free = kv_budget_bytes(shape, gpu, tp, n_in, eff, precision)
    per_request = shape.kv_bytes_per_sequence(tp, n_in + n_out, kv_element_bytes(eff, precision))
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
             ttft_ms: float, tpot_ms: float, eff: Efficiency, precision: Precision = DEFAULT) -> Estimate:
    """Max request rate of one replica for one bucket under the SLO.

    Steady state with continuous batching at mean batch b (Little's law, b = r * D):
      request duration  D(b) = n_out * T_d(b) + b * T_p      (every arrival's prefill stalls decode)
      rate              r(b) = b / D(b)
      TPOT              D(b) / n_out = T_d(b) + b * T_p / n_out
      TTFT              T_p + T_d(b) + W,  W = rho T_p / (2 (1 - rho)),  rho = r T_p   (M/D/1 wait)
    TPOT, TTFT and r all grow with b, so the answer is r at the largest b meeting memory and both SLOs.
    """
    why = tp_allowed(shape, gpu, tp) or unsupported(precision, gpu)
    b_mem, free = max_batch_by_memory(shape, gpu, tp, n_in, n_out, eff, precision)
    t_p = prefill_s(shape, gpu, tp, n_in, eff, precision)
    context = n_in + (n_out + 1) / 2

    def t_d(b: int) -> float:
        return decode_step_s(shape, gpu, tp, b, context, eff, precision)

    def zero(reason: str) -> Estimate:
        s = steady_state(t_p, t_d, n_out, 1)
        return Estimate(0.0, 0, t_p * 1e3, s.step_s * 1e3, s.ttft_s * 1e3, s.tpot_s * 1e3,
                        max(b_mem, 0), reason)

    if why:
        return zero(why)
    if b_mem < 1:
        need = weight_bytes(shape, tp, eff, precision) / GB
        return zero(f"does not fit: {need:.1f} GB weights per GPU, "
                    f"{max(free, 0) / GB:.1f} GB left for KV cache (< one request)")
    s, why = slo_capacity(t_p, t_d, n_out, ttft_ms, tpot_ms, b_mem)
    if why:
        return zero(why)
    return Estimate(s.rate, s.batch, t_p * 1e3, s.step_s * 1e3, s.ttft_s * 1e3, s.tpot_s * 1e3, b_mem)


@dataclass(frozen=True)
class Latency:
    """One replica serving `concurrency` requests at a time (a closed loop, as `vllm bench serve
    --max-concurrency N` drives it): what its clients see."""

    concurrency: int
    batch: int  # requests decoding together: min(concurrency, what the KV cache holds)
    ttft_ms: float
    tpot_ms: float
    output_tokens_per_s: float
    weights_gb_per_gpu: float
    kv_cache_tokens: int  # tokens of KV cache one replica holds after weights and activations
    fits: bool
    reason: str = ""  # why it does not fit or cannot run


def at_concurrency(shape: ModelShape, gpu: GpuSpec, tp: int, n_in: int, n_out: int, concurrency: int,
                   eff: Efficiency, precision: Precision = DEFAULT) -> Latency:
    """TTFT, TPOT and output tokens/s of one replica with `concurrency` requests always in flight.

    Closed loop, b = min(N, b_mem) running (the rest wait in the engine's queue):
      TPOT   T_d(b) + (b - 1) T_p / (n_out - 1)    each of the other b-1 requests' prefills stalls
                                                   the batch once during a request's decode
      TTFT   T_p + W + [b > 1] T_d(b)               W = M/D/1 prefill wait at rate r (at most
                                                   (b - 1) T_p), plus one decode step: the one in
                                                   flight at arrival, or the batch the prefill's step
                                                   carries (chunked prefill); as in steady_state
             + (N - b) / r                          queued behind full KV cache (Little's law)
      r      b / D,  D = TTFT + (n_out - 1) TPOT    (solved by fixed-point iteration)
      tok/s  N n_out / (D + queue wait) = b n_out / D_running
    """
    weights = weight_bytes(shape, tp, eff, precision)
    free = kv_budget_bytes(shape, gpu, tp, n_in, eff, precision)
    seq = n_in + n_out
    per_token = shape.kv_bytes_per_sequence(tp, seq, kv_element_bytes(eff, precision)) / seq
    kv_tokens = max(int(free // per_token), 0) if free > 0 else 0
    b_mem = min(kv_tokens // seq, eff.max_batch)
    why = tp_allowed(shape, gpu, tp) or unsupported(precision, gpu)
    if not why and b_mem < 1:
        why = (f"does not fit: {weights / GB:.1f} GB weights per GPU, "
               f"{max(free, 0) / GB:.1f} GB left for KV cache (< one request)")
    elif not why and b_mem < concurrency:
        why = f"KV cache holds {b_mem} requests of {seq} tokens, fewer than {concurrency}"
    b = max(1, min(concurrency, b_mem))
    t_p = prefill_s(shape, gpu, tp, n_in, eff, precision)
    t_d = decode_step_s(shape, gpu, tp, b, n_in + (n_out + 1) / 2, eff, precision)
    tpot = t_d + ((b - 1) * t_p / (n_out - 1) if n_out > 1 else 0.0)
    in_flight = t_d if b > 1 else 0.0
    ttft = t_p + in_flight
    for _ in range(50):  # D depends on TTFT through the prefill queue's rate; converges fast
        rate = b / (ttft + (n_out - 1) * tpot)
        rho = min(rate * t_p, 0.999)
        wait = min(rho * t_p / (2 * (1 - rho)), (b - 1) * t_p)
        new = t_p + in_flight + wait
        if abs(new - ttft) < 1e-12:
            break
        ttft = new
    duration = ttft + (n_out - 1) * tpot
    queued = max(concurrency - b, 0) * duration / b
    return Latency(concurrency, b, (ttft + queued) * 1e3, tpot * 1e3, b * n_out / duration,
                   weights / GB, kv_tokens, not why, why)
