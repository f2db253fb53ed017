"""The capacity table: mu[model, gpu, tp, bucket] from throughput tables and/or roofline estimates.

With a throughput table (`--profiles`) only the configurations it lists are used, unless
fill_estimates asks for roofline estimates where it has no entry. Every capacity keeps its
source ("measured" or what the table says, "estimated" for the roofline).

An entry's model matches a workload model by name, or else through the catalog's aliases (a Hugging
Face id as vLLM reports it, `meta-llama/Llama-3.1-8B-Instruct`, sizes `llama-3.1-8b`). Entries that
size nothing of the workload are named in a note, not dropped in silence.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gpumix.planner.catalog import Catalog, norm_name
from gpumix.planner.errors import InfeasibleError
from gpumix.planner.problem import BucketKey, Config, Problem
from gpumix.planner.profiles import ProfileEntry
from gpumix.planner.workload import GpuOffer, Workload, catalog_price_source
from gpumix.planner.precision import DEFAULT
from gpumix.planner.roofline import Efficiency, estimate


@dataclass
class CapacityReport:
    notes: list[str] = field(default_factory=list)
    # (model, bucket) -> why each config it could use fails; for infeasibility messages
    rejected: dict[tuple[str, BucketKey], list[str]] = field(default_factory=dict)


def gpu_offers(workload: Workload, catalog: Catalog, profiles, report: CapacityReport) -> list[GpuOffer]:
    if workload.gpus is not None:
        return list(workload.gpus)
    offers = [GpuOffer(g.name, g.price_per_hour, None, g, catalog_price_source(g)) for g in catalog.gpus.values()
              if g.price_per_hour is not None]
    known = {norm_name(o.name) for o in offers}
    for e in profiles or ():
        spec = catalog.gpu(e.gpu)
        if spec is None and norm_name(e.gpu) not in known:
            known.add(norm_name(e.gpu))
            report.notes.append(f"GPU {e.gpu!r} from the throughput table has no price: "
                                "list it under `gpus` in the workload to use it")
    return offers


def build_problem(workload: Workload, catalog: Catalog, profiles: tuple[ProfileEntry, ...] | None = None,
                  fill_estimates: bool = False) -> tuple[Problem, CapacityReport]:
    report = CapacityReport()
    offers = gpu_offers(workload, catalog, profiles, report)
    table = _Table(catalog, profiles or ())
    use_estimates = profiles is None or fill_estimates

    capacity: dict[Config, dict[BucketKey, float]] = {}
    source: dict[tuple[Config, BucketKey], str] = {}
    for m in workload.models:
        allowed_gpus = None if m.gpus is None else {norm_name(catalog.gpu(g).name if catalog.gpu(g) else g)
                                                     for g in m.gpus}
        for offer in offers:
            if allowed_gpus is not None and norm_name(offer.name) not in allowed_gpus:
                continue
            eff = Efficiency.from_dict(catalog.gpu_efficiency(offer.name))
            for tp in m.tp or workload.tp_degrees:
                for prec in m.precisions:
                    _add_config(Config(m.name, offer.name, tp, prec.quantization, prec.kv_cache_dtype),
                                m, offer, prec, eff, table, use_estimates, capacity, source, report)

    _apply_model_utilization(workload, capacity)
    order = {m.name: i for i, m in enumerate(workload.models)}
    configs = tuple(sorted(capacity, key=lambda c: (order[c.model], c.gpu, c.tp, c.quantization,
                                                    c.kv_cache_dtype)))
    problem = Problem(
        models=tuple(m.name for m in workload.models),
        buckets={m.name: tuple(b.key for b in m.buckets) for m in workload.models},
        demand={(m.name, b.key): m.demand(b) for m in workload.models for b in m.buckets},
        configs=configs,
        capacity={c: dict(sorted(capacity[c].items())) for c in configs},
        price={o.name: o.price_per_hour for o in offers},
        available={o.name: o.available for o in offers},
        max_utilization=workload.max_utilization,
        source=source,
        price_source={o.name: o.price_source for o in offers if o.price_source},
    )
    unused = [e for e in profiles or () if id(e) not in table.used]
    if unused:
        report.notes.append(unused_note(unused))
    return problem, report


def _apply_model_utilization(workload: Workload, capacity: dict) -> None:
    """A model's own max_utilization U_m: every solver and the checker hold a group to
    load / mu <= U * n with the workload's U, so its capacities become mu x U_m / U (the same
    constraint as load / mu <= U_m * n); routes' max_rps of such a model show that scaled figure."""
    scale = {m.name: m.max_utilization / workload.max_utilization for m in workload.models
             if m.max_utilization is not None and m.max_utilization != workload.max_utilization}
    for c, caps in capacity.items():
        f = scale.get(c.model)
        if f is not None:
            for k in caps:
                caps[k] *= f


class _Table:
    """The throughput table keyed by (model, GPU, TP, bucket, precision); an entry sizes only the
    precision it was measured at. `used` holds the ids of the entries a lookup returned."""

    def __init__(self, catalog: Catalog, profiles):
        self.catalog = catalog
        self.exact: dict[tuple, ProfileEntry] = {}  # by the entry's own model name
        self.alias: dict[tuple, ProfileEntry] = {}  # by the catalog model its name is an alias of
        self.used: set[int] = set()
        for e in profiles:
            spec = catalog.gpu(e.gpu)
            rest = (norm_name(spec.name if spec else e.gpu), e.tp, e.input_tokens, e.output_tokens,
                    e.quantization, e.kv_cache_dtype)
            self.exact[(norm_name(e.model), *rest)] = e
            self.alias.setdefault((self._model_key(e.model), *rest), e)

    def _model_key(self, name: str) -> str:
        shape = self.catalog.model(name)
        return norm_name(shape.name if shape else name)

    def get(self, model: str, *rest) -> ProfileEntry | None:
        hit = self.exact.get((norm_name(model), *rest)) or self.alias.get((self._model_key(model), *rest))
        if hit is not None:
            self.used.add(id(hit))
        return hit


def unused_note(unused: list) -> str:
    """One note naming the throughput-table entries that size nothing of the workload."""
    def label(e):
        prec = "" if (e.quantization, e.kv_cache_dtype) == (DEFAULT.quantization, DEFAULT.kv_cache_dtype) \
            else f" {e.quantization}/{e.kv_cache_dtype}"
        return f"{e.model} on {e.gpu} TP{e.tp}{prec} {e.input_tokens}/{e.output_tokens}"
    shown = ", ".join(label(e) for e in unused[:5]) + (f" and {len(unused) - 5} more" if len(unused) > 5 else "")
    return (f"{len(unused)} throughput-table entr{'y' if len(unused) == 1 else 'ies'} matched no model, "
            f"GPU, TP, precision and bucket of the workload and went unused: {shown}")


def _add_config(cfg: Config, m, offer: GpuOffer, prec, eff: Efficiency, table: "_Table", use_estimates: bool,
                capacity: dict, source: dict, report: CapacityReport) -> None:
    """mu of one config on each of its model's buckets: the throughput table's entry (which must be
    for the same precision), else the roofline's estimate."""
    for b in m.buckets:
        hit = table.get(m.name, norm_name(offer.name), cfg.tp, *b.key, cfg.quantization, cfg.kv_cache_dtype)
        if hit is not None:
            mu, src, why = hit.max_rps, hit.source, "throughput table: max_rps 0"
        elif use_estimates and m.shape is not None and offer.spec is not None:
            est = estimate(m.shape, offer.spec, cfg.tp, b.input_tokens, b.output_tokens,
                           m.slo.ttft_ms, m.slo.tpot_ms, eff, prec)
            mu, src, why = est.max_rps, "estimated", est.reason
        else:
            continue
        if mu > 0:
            capacity.setdefault(cfg, {})[b.key] = mu
            source[(cfg, b.key)] = src
        else:
            label = offer.name + f" TP{cfg.tp}" + ("" if cfg.precision == DEFAULT else f" {prec.label}")
            report.rejected.setdefault((m.name, b.key), []).append(f"{label}: {why}")


def require_servable(problem: Problem, report: CapacityReport) -> None:
    """Raise InfeasibleError naming the first bucket no allowed GPU x TP can serve."""
    missing = problem.unserved()
    if not missing:
        return
    model, (n_in, n_out) = missing[0]
    reasons = report.rejected.get((model, (n_in, n_out)), [])
    detail = "; ".join(reasons[:3]) + (f"; and {len(reasons) - 3} more" if len(reasons) > 3 else "")
    more = f" ({len(missing) - 1} more buckets likewise)" if len(missing) > 1 else ""
    raise InfeasibleError(
        f"model {model!r} bucket {n_in}/{n_out} tokens fits no allowed GPU x TP"
        + (f": {detail}" if detail else ": no throughput-table entry or estimate for it") + more)
