"""The multi-period problem as numbers: per-period demand and availability, start costs per replica.

Sets        T periods t = 0..T-1 of h[t] hours; the stage-1 sets M, K_m, G, C (planner/problem.py).
Data        d[m,k,t] demand (req/s) in period t; A[g,t] GPUs of type g available in period t (None =
            unlimited); sigma[c] $ per replica of config c started; the stage-1 mu[c,k], p[g], U.
A schedule  n[c,t] in Z+ replicas, x[c,k,t] >= 0 req/s routed, with each period a stage-1 plan
            (C1..C3 of planner/problem.py on d[., ., t] and A[., t]) and
            starts[c,t] = max(0, n[c,t] - n[c,t-1]), where t-1 of period 0 is the last period when
            cyclic (a day that repeats), else no replicas (the horizon starts from an empty fleet)
            cost = sum_t h[t] * sum_c p[g] * tp * n[c,t] + sum_{c,t} sigma[c] * starts[c,t]

The default start cost is the GPU time lost while the replica loads its weights: the replica's $/h
times (weight bytes / LOAD_GBPS) / 3600 s. LOAD_GBPS is vLLM's default safetensors loader reading
from a cloud SSD: 47.99 s for Llama-3-8B (16.06 GB) on an AWS gp3 volume, 0.33 GB/s (NVIDIA, "Reducing
Cold Start Latency for LLM Inference with NVIDIA Run:ai Model Streamer", 2025; the same post
measures 14.3 s with the streamer). A start cost in the workload (`start_cost_per_replica`, per model
or for all) or `--start-cost` replaces it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from gpumix.planner.catalog import Catalog
from gpumix.planner.errors import InputError
from gpumix.planner.problem import BucketKey, Config, Problem
from gpumix.planner.roofline import Efficiency, weight_bytes
from gpumix.planner.workload import Workload

LOAD_GBPS = 0.33  # GB/s a replica loads its weights at (module docstring: source)
GB = 1e9
LOAD_SOURCE = ("weights / 0.33 GB/s (vLLM's safetensors loader from an AWS gp3 SSD, NVIDIA Run:ai Model "
               "Streamer post, 2025) x the replica's $/h")


@dataclass(frozen=True)
class Schedule:
    base: Problem  # configs, capacities, prices; demand = each bucket's peak, available = the minimum
    hours: tuple[float, ...]  # h[t]
    demand: tuple[dict[tuple[str, BucketKey], float], ...]  # d[., ., t]
    available: tuple[dict[str, int | None], ...]  # A[., t]
    start_cost: dict[Config, float]  # sigma[c], $ per replica started
    cyclic: bool = True
    timezone: str = "UTC"
    start_cost_source: str = LOAD_SOURCE  # where sigma comes from, for the plan

    @property
    def periods(self) -> int:
        return len(self.hours)

    @property
    def total_hours(self) -> float:
        return sum(self.hours)

    def period(self, t: int) -> Problem:
        """Period t as a stage-1 problem (its own demand and availability)."""
        return replace(self.base, demand=dict(self.demand[t]), available=dict(self.available[t]))

    def previous(self, t: int) -> int | None:
        """The period before t: the last one for period 0 when cyclic, else None (an empty fleet)."""
        if t > 0:
            return t - 1
        return self.periods - 1 if self.cyclic else None

    def restrict(self, models=None, available: tuple[dict, ...] | None = None) -> "Schedule":
        """A sub-schedule on some models (and other availability per period)."""
        base = self.base.restrict(models=models)
        keep = set(base.models)
        return replace(self, base=base,
                       demand=tuple({key: v for key, v in d.items() if key[0] in keep} for d in self.demand),
                       available=tuple(dict(a) for a in (available or self.available)),
                       start_cost={c: v for c, v in self.start_cost.items() if c.model in keep})


def starts_of(schedule: Schedule, counts: list[dict[Config, int]]) -> list[dict[Config, int]]:
    """starts[c,t] = max(0, n[c,t] - n[c,t-1]) of replica counts per period (t-1 as Schedule.previous)."""
    out = []
    for t, now in enumerate(counts):
        prev = schedule.previous(t)
        before = counts[prev] if prev is not None else {}
        out.append({c: k - before.get(c, 0) for c, k in now.items() if k > before.get(c, 0)})
    return out


def schedule_cost(schedule: Schedule, counts: list[dict[Config, int]]) -> tuple[float, list[float], list[float]]:
    """(total $, $/h of each period, start $ of each period) of replica counts per period."""
    per_hour = [sum(schedule.base.config_cost(c) * k for c, k in n.items()) for n in counts]
    starts = [sum(schedule.start_cost[c] * k for c, k in s.items()) for s in starts_of(schedule, counts)]
    total = sum(h * c for h, c in zip(schedule.hours, per_hour)) + sum(starts)
    return total, per_hour, starts


def build_schedule(workload: Workload, problem: Problem, catalog: Catalog,
                   start_cost: float | None = None) -> Schedule:
    """The schedule of a workload with periods over its stage-1 problem (built at each bucket's peak
    rate). `start_cost` (--start-cost) overrides every start cost."""
    periods = workload.periods
    assert periods is not None
    demand = tuple({(m.name, b.key): m.rates[t] * b.share for m in workload.models for b in m.buckets}
                   for t in range(periods.count))
    offers = {g.name: g for g in workload.gpus or ()}
    available = tuple({g: (offers[g].available_per_period[t] if g in offers and offers[g].available_per_period
                           else problem.available.get(g)) for g in problem.available}
                      for t in range(periods.count))
    sigma, source = _start_costs(workload, problem, catalog, start_cost)
    return Schedule(problem, (periods.hours,) * periods.count, demand, available, sigma, periods.cyclic,
                    periods.timezone, source)


def _start_costs(workload: Workload, problem: Problem, catalog: Catalog,
                 override: float | None) -> tuple[dict[Config, float], str]:
    if override is not None:
        return {c: float(override) for c in problem.configs}, "--start-cost"
    by_name = {m.name: (i, m) for i, m in enumerate(workload.models)}
    top = workload.periods.start_cost_per_replica if workload.periods else None
    out, used_default, used_given = {}, False, False
    for c in problem.configs:
        i, m = by_name[c.model]
        given = m.start_cost_per_replica if m.start_cost_per_replica is not None else top
        if given is not None:
            out[c] = given
            used_given = True
            continue
        if m.shape is None:
            raise InputError(workload.path, f"models[{i}].start_cost_per_replica",
                             f"the default start cost needs the weights of {m.name!r} (no config or catalog "
                             "shape): give start_cost_per_replica ($ per replica started) or --start-cost")
        eff = Efficiency.from_dict(catalog.gpu_efficiency(c.gpu))
        load_s = weight_bytes(m.shape, 1, eff, c.precision) / (LOAD_GBPS * GB)
        out[c] = problem.config_cost(c) * load_s / 3600
        used_default = True
    source = ("workload start_cost_per_replica" if not used_default else
              LOAD_SOURCE + ("; workload start_cost_per_replica where given" if used_given else ""))
    return out, source
