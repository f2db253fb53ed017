"""Co-location capacity model: when several models fit on one GPU set, in memory and in time.

A shared group is `count` identical GPU sets (GPU type g, TP degree t: t GPUs in one node); every
set hosts every model of the group, and each model's routed load is spread evenly over the sets.
Symbols as in docs/capacity-model.md; per GPU of a set (weights and KV shard over TP):

  time    f_m = sum_k x[m,k] / mu[(m,g,t),k]         busy share of one set, in sets' worth
          sum_m f_m <= count * U                       (U = max_utilization, as for replicas)
  memory  mem_m = W_m + A_m + kv_m * max(sum_k (x[m,k] / count) * h[m,k] * (n_in + n_out),
                                         max_k (n_in + n_out))
          sum_m mem_m <= M * memory_utilization - reserve_gb
    W_m   weights per GPU (roofline.weight_bytes: at the config's precision); A_m one prefill's activations at the longest input;
    kv_m  KV bytes per token per GPU; h[m,k] = (ttft_slo + n_out * tpot_slo) seconds, the longest a
          request that meets its SLO stays, so x * h bounds its concurrent requests (Little's law);
          at least one request of the longest context always fits.
  The reserve (CUDA context, graphs) is paid once per GPU: one engine process hosts all the models.
  latency (S4) sum_m T1_m <= TPOT_m' for every member m'
    T1_m  m's least decode step on the set (batch 1, its shortest bucket's mean context): the
          profile's fitted step when `gpumix profile` measured this config, else the roofline's.
          The members step in turn, so while they all have requests running, a token of any one of
          them waits for a step of every other: no TPOT below the sum of their steps is possible.
          A necessary condition (prefills and bigger batches only add), so S2 and S4 can hold and a
          plan still miss its SLO; validate (docs/sharing.md, "On a GPU").

mu is the dedicated replica's capacity (docs/capacity-model.md), so a model's time share assumes it
gets the set's whole bandwidth while it runs (time slicing, no speed-up from co-batching). A model
needs its shape (a config.json or a catalog name) and the GPU its memory size to be shared: a model
known only from a throughput table can still be planned, but only on dedicated replicas.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpumix.planner.catalog import Catalog
from gpumix.planner.problem import BucketKey, Config, Problem
from gpumix.planner.workload import Workload
from gpumix.planner.roofline import GB, Efficiency, decode_step_s, kv_element_bytes, weight_bytes

REL_TOL = 1e-6


@dataclass(frozen=True)
class Footprint:
    """One model on one GPU set type, per GPU of the set (bytes)."""

    weights: float
    activations: float
    kv_per_token: float
    hold_s: dict[BucketKey, float]  # SLO-bounded request duration per bucket
    step_s: float = 0.0  # least decode step (batch 1, shortest context) on the set: S4
    tpot_s: float = float("inf")  # the model's TPOT SLO


@dataclass(frozen=True)
class SharingModel:
    footprint: dict[Config, Footprint]
    budget: dict[str, float]  # gpu -> bytes per GPU for weights, activations and KV
    why_not: dict[str, str] = field(default_factory=dict)  # model -> why it cannot be shared

    def config(self, model: str, gpu: str, tp: int) -> Config:
        """The config of `model` on a (gpu, tp) set: a shared model has one precision (plan_shared
        refuses precision lists), so (model, gpu, tp) names it."""
        index = self.__dict__.get("_index")
        if index is None:
            index = {(c.model, c.gpu, c.tp): c for c in self.footprint}
            object.__setattr__(self, "_index", index)  # a cache of the frozen footprints
        return index.get((model, gpu, tp), Config(model, gpu, tp))


def build_sharing(workload: Workload, catalog: Catalog, problem: Problem,
                  step_fits: dict | None = None) -> SharingModel:
    """step_fits (planner.profiles.decode_step_fits): measured decode steps, used for S4 where a
    config has one; elsewhere the roofline's."""
    specs = {o.name: o.spec for o in (workload.gpus or ())}
    for g in problem.price:
        if g not in specs:
            specs[g] = catalog.gpu(g)
    budget, effs = {}, {}
    for g, spec in specs.items():
        if spec is None or g not in problem.price:
            continue
        eff = Efficiency.from_dict(catalog.gpu_efficiency(g))
        effs[g] = eff
        budget[g] = spec.memory_gb * GB * eff.memory_utilization - eff.reserve_gb * GB
    demand = {m.name: m for m in workload.models}
    footprint, why_not = {}, {}
    for c in problem.configs:
        m = demand[c.model]
        if m.shape is None:
            why_not[c.model] = "no model shape (throughput table only): its memory is unknown"
            continue
        if c.gpu not in budget:
            continue
        eff, s = effs[c.gpu], m.shape
        n_in = max(b.input_tokens for b in m.buckets)
        context = min(b.input_tokens + (b.output_tokens + 1) / 2 for b in m.buckets)
        footprint[c] = Footprint(
            weights=weight_bytes(s, c.tp, eff, c.precision),
            activations=n_in * (4 * s.hidden_size + 2 * s.intermediate_size / c.tp) * eff.dtype_bytes,
            kv_per_token=float(s.kv_bytes_per_token(c.tp, kv_element_bytes(eff, c.precision))),
            hold_s={b.key: (m.slo.ttft_ms + b.output_tokens * m.slo.tpot_ms) / 1e3 for b in m.buckets},
            step_s=_least_step(c, s, specs[c.gpu], eff, context, step_fits or {}),
            tpot_s=m.slo.tpot_ms / 1e3)
    for m in problem.models:
        if m not in why_not and not any(c in footprint for c in problem.configs_of(m)):
            why_not[m] = "no GPU type with a known memory size serves it"
    return SharingModel(footprint, budget, why_not)


def sharing_for(workload: Workload, problem: Problem, profiles_path=None, efficiency_path=None) -> SharingModel:
    """build_sharing with the bundled catalog (under a user efficiency file, when given) and, when a
    throughput table is given, its measured decode steps (what `plan --share-gpus` and `check` use)."""
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.efficiency import with_efficiency
    from gpumix.planner.profiles import decode_step_fits

    catalog = with_efficiency(load_catalog(), efficiency_path)
    return build_sharing(workload, catalog, problem, decode_step_fits(profiles_path) if profiles_path else None)


def time_fraction(problem: Problem, c: Config, rps: dict[BucketKey, float]) -> float:
    """Sets' worth of time the load `rps` (bucket -> req/s) of c.model takes on c's GPU set type."""
    mu = problem.capacity[c]
    return sum(v / mu[k] for k, v in rps.items() if v > 0)


def memory_per_gpu(fp: Footprint, rps: dict[BucketKey, float], count: int = 1) -> float:
    """Bytes per GPU one model takes on each of `count` sets sharing its load `rps`."""
    tokens = sum(v / count * fp.hold_s[k] * (k[0] + k[1]) for k, v in rps.items() if v > 0)
    longest = max(k[0] + k[1] for k in fp.hold_s)
    return fp.weights + fp.activations + fp.kv_per_token * max(tokens, longest)


def _least_step(c: Config, shape, spec, eff: Efficiency, context: float, fits: dict) -> float:
    """c's decode step at batch 1 and `context` tokens, seconds: measured fit, else the roofline."""
    from gpumix.planner.catalog import norm_name

    fit = fits.get((norm_name(c.model), norm_name(c.gpu), c.tp))
    if fit is not None:
        a, b, k = fit
        return (a + b + k * context) / 1e3
    return decode_step_s(shape, spec, c.tp, 1, context, eff, c.precision) if spec else 0.0


def latency_ok(fps) -> bool:
    """S4 for the footprints of one set's members: their least decode steps add up to no more than
    any member's TPOT SLO."""
    fps = list(fps)
    return not fps or sum(fp.step_s for fp in fps) <= min(fp.tpot_s for fp in fps) * (1 + REL_TOL)


def min_memory_per_gpu(fp: Footprint) -> float:
    """The least a model takes on any set that hosts it, whatever its load and the set count."""
    return fp.weights + fp.activations + fp.kv_per_token * max(k[0] + k[1] for k in fp.hold_s)


def full_demand(problem: Problem, model: str) -> dict[BucketKey, float]:
    return {k: problem.demand[(model, k)] for k in problem.buckets[model]}


def can_serve_all(problem: Problem, c: Config) -> bool:
    return all(problem.demand[(c.model, k)] <= 0 or k in problem.capacity[c] for k in problem.buckets[c.model])


@dataclass(frozen=True)
class SetItem:
    """One set of the plan's shared group `group` as a stage-2 packing item: like a replica, a TP
    group of tp x gpu inside one node, but hosting the group's models rather than one config."""

    group: int  # index into the plan's `shared` list
    gpu: str
    tp: int

    def sort_key(self) -> tuple:
        """Orders sets before every model replica (see packing.unit_key), groups by str(index)."""
        return (0, str(self.group), self.gpu, self.tp)


@dataclass(frozen=True)
class SharedSet:
    """A solver's shared group: `count` sets of `tp` x `gpu`, each hosting all `models`."""

    gpu: str
    tp: int
    count: int
    models: tuple[str, ...]


def shared_entries(problem: Problem, sharing: SharingModel, sets: list[SharedSet]) -> list[dict]:
    """The plan's `shared` list: each model's whole demand on its group, with time and memory use."""
    out = []
    for s in sets:
        entries, busy, mem = [], 0.0, 0.0
        for m in s.models:
            c = sharing.config(m, s.gpu, s.tp)
            rps = full_demand(problem, m)
            f, mb = time_fraction(problem, c, rps), memory_per_gpu(sharing.footprint[c], rps, s.count)
            busy, mem = busy + f, mem + mb
            entries.append({
                "model": m,
                "quantization": c.quantization,
                "kv_cache_dtype": c.kv_cache_dtype,
                "time_fraction": f / s.count,
                "memory_gb_per_gpu": round(mb / GB, 6),
                "routes": [{"input_tokens": k[0], "output_tokens": k[1], "rps": v,
                            "max_rps": problem.capacity[c][k], "source": problem.source.get((c, k), "estimated")}
                           for k, v in rps.items() if v > 0]})
        price = problem.price[s.gpu]
        out.append({
            "gpu": s.gpu, "tp": s.tp, "count": s.count, "gpus": s.tp * s.count,
            "price_per_gpu_hour": price, "cost_per_hour": round(price * s.tp * s.count, 9),
            "utilization": busy / s.count,
            "memory_gb_per_gpu": round(mem / GB, 6),
            "memory_budget_gb_per_gpu": round(sharing.budget[s.gpu] / GB, 6),
            "models": entries})
    return out

