"""The sizing problem as numbers: what the solvers read and the checker re-checks.

Sets        M models; K_m buckets of model m; G GPU types; C configs c = (m, g, t, q) with t the TP
            degree and q the precision (quantization, KV cache dtype; planner/precision.py).
Data        d[m,k] demand (req/s); mu[c,k] > 0 max req/s of one replica of c on bucket k;
            p[g] $/GPU-hour; A[g] GPUs of type g available (None = unlimited); U max utilization.
A plan      n[c] in Z+ replicas and x[c,k] >= 0 req/s routed, with
            C1  sum_c x[c,k] = d[m,k]                  every bucket served
            C2  sum_k x[c,k] / mu[c,k] <= U * n[c]     no replica group past U
            C3  sum_{c on g} t * n[c] <= A[g]           availability
            cost = sum_c p[g] * t * n[c]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from gpumix.planner.precision import DEFAULT, Precision

BucketKey = tuple[int, int]  # (input_tokens, output_tokens)


class Config(NamedTuple):
    model: str
    gpu: str
    tp: int
    quantization: str = "none"
    kv_cache_dtype: str = "auto"

    @property
    def precision(self) -> Precision:
        return Precision(self.quantization, self.kv_cache_dtype)

    @property
    def label(self) -> str:
        """'llama on H100 TP2' plus the precision when it is not the default (bf16 weights and KV)."""
        text = f"{self.model} on {self.gpu} TP{self.tp}"
        return text if self.precision == DEFAULT else f"{text} {self.precision.label}"


def config_of(group: dict) -> Config:
    """The Config of a plan's replica group (or node replica); plans written before precision was a
    decision have no quantization keys and mean bf16 weights and KV cache."""
    return Config(group.get("model"), group.get("gpu"), group.get("tp"),
                  group.get("quantization") or "none", group.get("kv_cache_dtype") or "auto")


@dataclass(frozen=True)
class Problem:
    models: tuple[str, ...]
    buckets: dict[str, tuple[BucketKey, ...]]
    demand: dict[tuple[str, BucketKey], float]
    configs: tuple[Config, ...]  # sorted; each serves at least one bucket
    capacity: dict[Config, dict[BucketKey, float]]  # only mu > 0
    price: dict[str, float]  # $/GPU-hour
    available: dict[str, int | None]
    max_utilization: float
    source: dict[tuple[Config, BucketKey], str] = field(default_factory=dict)
    price_source: dict[str, str] = field(default_factory=dict)  # gpu -> where its price comes from

    def config_cost(self, c: Config) -> float:
        return self.price[c.gpu] * c.tp

    def configs_of(self, model: str) -> tuple[Config, ...]:
        index = self.__dict__.get("_by_model")
        if index is None:
            index = {}
            for c in self.configs:
                index.setdefault(c.model, []).append(c)
            object.__setattr__(self, "_by_model", index)  # a cache, not state: the problem is immutable
        return tuple(index.get(model, ()))

    def restrict(self, models=None, gpus=None, available: dict | None = None, keep=None) -> "Problem":
        """A sub-problem on some models and/or GPU types, and only configs `keep(c)` accepts (same
        data, fewer rows)."""
        keep_m = tuple(m for m in self.models if models is None or m in models)
        keep_g = {g for g in self.price if gpus is None or g in gpus}
        pool = self.configs if models is None else [c for m in keep_m for c in self.configs_of(m)]
        configs = tuple(c for c in pool if c.gpu in keep_g and (keep is None or keep(c)))
        avail = dict(self.available if available is None else available)
        return Problem(
            models=keep_m,
            buckets={m: self.buckets[m] for m in keep_m},
            demand={(m, k): self.demand[(m, k)] for m in keep_m for k in self.buckets[m]},
            configs=configs,
            capacity={c: self.capacity[c] for c in configs},
            price={g: p for g, p in self.price.items() if g in keep_g},
            available={g: a for g, a in avail.items() if g in keep_g},
            max_utilization=self.max_utilization,
            source=self._source_of(configs),
            price_source={g: s for g, s in self.price_source.items() if g in keep_g},
        )

    def _source_of(self, configs: tuple[Config, ...]) -> dict:
        if len(configs) == len(self.configs):
            return self.source
        return {(c, k): self.source[(c, k)] for c in configs for k in self.capacity[c]
                if (c, k) in self.source}

    def unserved(self) -> list[tuple[str, BucketKey]]:
        """Buckets with positive demand that no config can serve."""
        servable = {(c.model, k) for c in self.configs for k in self.capacity[c]}
        return [(m, k) for m in self.models for k in self.buckets[m]
                if self.demand[(m, k)] > 0 and (m, k) not in servable]
