"""Step times and KV capacity of one simulated replica: from a profile's latency fit, else the roofline.

A replica's engine needs three things (docs/simulate.md):
  prefill_s(n)        one request's prefill of n prompt tokens
  decode_line(B)      (alpha, beta): one decode step of B rows at context c takes alpha + beta c seconds
  n_slots, kv_tokens  how many requests it holds at once and how many KV tokens they may reserve

Fit (`gpumix profile`, profiler.measure.fit.LatencyModel): prefill a + b n + c n^2 ms, decode
a + b B + c B ctx ms: linear in the context, so alpha = a + b B, beta = c B exactly. The runtime
engine a profile measured (profiler.runtime.engine) runs cache rows 0..R-1 (R = highest running
slot + 1) and every row attends over the longest running context, so a fitted replica is stepped
`padded`: B = R rows at the longest context. Slots: the runtime's n_slots (the profile sweep's
largest decode batch, else 32 on CPU / 256 on CUDA, as profiler.runtime.spec builds it), each
holding one request of up to max_seq tokens.

Roofline (planner.roofline, where nothing was measured): prefill_s and decode_step_s of the model's
shape on the GPU's spec at the plan's precision. decode_step_s is a max of a memory and a compute
line in the context; the engine uses its chord between the shortest prompt and the longest request
(exact when one regime holds over the range); the range and the KV sizing are those of the buckets
the group is routed (a small GPU may serve a model's short buckets only). Paged attention: B = running requests at their mean
context. KV: planner.roofline's capacity model (memory after weights, one prefill's activations
and the reserve, divided by the KV bytes per token), at most Efficiency.max_batch requests.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MIN_STEP_S = 1e-6  # a step never takes no time (a fit of zeros would stall the clock)


@dataclass
class StepModel:
    """Picklable: plain coefficients (fit) or the roofline's inputs; caches fill per process."""
    source: str  # "profile fit" or "roofline"
    padded: bool  # rows R at the longest context (the gpumix runtime) vs running B at the mean context
    n_slots: int
    kv_tokens: int
    fit: tuple | None = None  # ((a, b, c) prefill ms, (a, b, c) decode ms)
    roof: tuple | None = None  # (shape, gpu spec, tp, efficiency, precision, ctx_lo, ctx_hi)
    _pre: dict = field(default_factory=dict, repr=False)
    _dec: dict = field(default_factory=dict, repr=False)

    def prefill_s(self, n: int) -> float:
        v = self._pre.get(n)
        if v is None:
            if self.fit is not None:
                a, b, c = self.fit[0]
                v = (a + b * n + c * n * n) * 1e-3
            else:
                from gpumix.planner.roofline import prefill_s

                shape, gpu, tp, eff, prec, _, _ = self.roof
                v = prefill_s(shape, gpu, tp, n, eff, prec)
            v = self._pre[n] = max(v, MIN_STEP_S)
        return v

    def decode_line(self, batch: int) -> tuple[float, float]:
        v = self._dec.get(batch)
        if v is None:
            if self.fit is not None:
                a, b, c = self.fit[1]
                v = ((a + b * batch) * 1e-3, c * batch * 1e-3)
            else:
                from gpumix.planner.roofline import decode_step_s

                shape, gpu, tp, eff, prec, lo, hi = self.roof
                t_lo = decode_step_s(shape, gpu, tp, batch, lo, eff, prec)
                t_hi = decode_step_s(shape, gpu, tp, batch, hi, eff, prec)
                beta = max((t_hi - t_lo) / (hi - lo), 0.0) if hi > lo else 0.0
                v = (t_lo - beta * lo, beta)
            v = self._dec[batch] = (max(v[0], MIN_STEP_S), v[1])
        return v

    def describe(self) -> dict:
        return {"source": self.source, "padded_rows": self.padded, "n_slots": self.n_slots,
                "kv_tokens": self.kv_tokens}


def from_fit(fit: dict, provenance: dict, max_seq: int) -> StepModel:
    """A `gpumix profile` record's fit and provenance (profiler.runtime.spec.replica_spec's n_slots)."""
    from gpumix.profiler.measure.fit import LatencyModel

    lat = LatencyModel.from_dict(fit)
    batches = [d.get("batch") for d in (provenance.get("sweep") or {}).get("decode", []) if isinstance(d, dict)]
    batches = [b for b in batches if isinstance(b, int) and not isinstance(b, bool) and b > 0]
    default = 256 if str(provenance.get("device", "cpu")).startswith("cuda") else 32
    n_slots = max(batches) if batches else default
    return StepModel("profile fit", True, n_slots, n_slots * max_seq,
                     fit=(tuple(map(float, lat.prefill)), tuple(map(float, lat.decode))))


def from_roofline(shape, gpu, tp: int, eff, precision, buckets) -> StepModel | str:
    """The roofline's step model, or why it has none (the model does not fit, TP not allowed)."""
    from gpumix.planner.precision import unsupported
    from gpumix.planner.roofline import kv_budget_bytes, kv_element_bytes, tp_allowed

    why = tp_allowed(shape, gpu, tp) or unsupported(precision, gpu)
    if why:
        return why
    n_in = max(i for i, _ in buckets)
    seq = max(i + o for i, o in buckets)
    free = kv_budget_bytes(shape, gpu, tp, n_in, eff, precision)
    per_token = shape.kv_bytes_per_sequence(tp, seq, kv_element_bytes(eff, precision)) / seq
    kv_tokens = int(free // per_token) if free > 0 and per_token > 0 else 0
    if kv_tokens < seq:
        return f"the KV cache left after the weights holds {kv_tokens} tokens, fewer than one {seq}-token request"
    lo = min(i for i, _ in buckets)
    return StepModel("roofline", False, int(eff.max_batch), kv_tokens,
                     roof=(shape, gpu, tp, eff, precision, float(lo), float(seq)))
