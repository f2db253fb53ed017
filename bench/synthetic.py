"""Synthetic but realistic planning instances (workload + throughput table) for benchmarks and tests.

Sizes S, M, L, XL: about 10, 50, 200 and 1000 models over 5, 10, 12 and 16 GPU types (catalog GPUs,
and the same GPUs at other clouds' prices), TP in {1, 2, 4, 8}, 6 request buckets per model, models
from 1B to 405B parameters (capacities from the roofline model on catalog shapes, so big models fit
only at high TP or on big GPUs), rates log-uniform from 0.3 to 50 req/s. With binding=True the GPU
types the unconstrained optimum spends most on get availability well below what it uses.
Everything is seeded: the same arguments give the same instance.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass

from gpumix.planner.catalog import load_catalog
from gpumix.planner.roofline import Efficiency, estimate

SIZES = {"S": (10, 5), "M": (50, 10), "L": (200, 12), "XL": (1000, 16)}

# (gpu, price multiplier, label): the catalog GPU at its catalog price, then at other clouds.
GPU_POOL = [
    ("L4", 1.0, ""), ("A10G", 1.0, ""), ("L40S", 1.0, ""), ("A100-80GB", 1.0, ""), ("H100", 1.0, ""),
    ("T4", 1.0, ""), ("A100-40GB", 1.0, ""), ("H200", 1.0, ""), ("MI300X", 1.0, ""), ("B200", 1.0, ""),
    ("H100", 0.42, "@neo"), ("A100-80GB", 0.45, "@neo"), ("L40S", 0.75, "@neo"), ("L4", 0.9, "@gcp"),
    ("H100-PCIe", 1.0, ""), ("A10G", 0.8, "@neo"),
]
MODEL_POOL = ["llama-3.2-1b", "qwen2.5-1.5b", "llama-3.2-3b", "phi-3-mini", "qwen2.5-7b", "mistral-7b",
              "llama-3.1-8b", "gemma-2-9b", "qwen2.5-14b", "gemma-2-27b", "qwen2.5-32b", "mixtral-8x7b",
              "llama-3.1-70b", "qwen2.5-72b", "llama-3.1-405b"]
BUCKET_POOL = [(128, 32), (256, 128), (512, 64), (512, 256), (1024, 128), (1024, 512), (2048, 256),
               (4096, 256), (4096, 1024), (8192, 512)]
SLO_POOL = [(500, 40), (1000, 60), (2000, 100), (4000, 150)]
TPS = (1, 2, 4, 8)


@dataclass(frozen=True)
class Instance:
    name: str
    workload: dict
    profiles: dict


def generate(size: str, binding: bool = False, seed: int = 0) -> Instance:
    n_models, n_gpus = SIZES[size]
    rng = random.Random(f"{size}-{seed}")
    cat = load_catalog()
    pool = GPU_POOL[:n_gpus]
    gpus = [{"name": g + label, "price_per_hour": round(cat.gpu(g).price_per_hour * mult, 4)}
            for g, mult, label in pool]
    cache: dict[tuple, float] = {}

    def mu(model: str, gpu: str, tp: int, bucket, slo) -> float:
        key = (model, gpu, tp, bucket, slo)
        if key not in cache:
            eff = Efficiency.from_dict(cat.gpu_efficiency(gpu))
            cache[key] = estimate(cat.model(model), cat.gpu(gpu), tp, *bucket, *slo, eff).max_rps
        return cache[key]

    models, entries = [], []
    while len(models) < n_models:
        # size skew: small and mid models are common, 405B rare
        base = MODEL_POOL[min(int(rng.random() ** 1.3 * len(MODEL_POOL)), len(MODEL_POOL) - 1)]
        slo = rng.choice(SLO_POOL)
        buckets = sorted(rng.sample(BUCKET_POOL, 6))
        weights = [rng.gammavariate(1.0, 1.0) for _ in buckets]
        shares = [round(w / sum(weights), 6) for w in weights]
        shares[-1] = round(1.0 - sum(shares[:-1]), 6)
        if min(shares) <= 0:
            continue
        rate = round(math.exp(rng.uniform(math.log(0.3), math.log(50.0))), 3)
        name = f"m{len(models):04d}-{base}"
        skill = rng.uniform(0.85, 1.15)  # per-deployment efficiency spread
        mine = []
        for (g, _, label) in pool:
            for tp in TPS:
                for b in buckets:
                    cap = mu(base, g, tp, b, slo)
                    if cap > 0:
                        mine.append({"model": name, "gpu": g + label, "tp": tp, "input_tokens": b[0],
                                     "output_tokens": b[1], "max_rps": round(cap * skill, 6)})
        served = {(e["input_tokens"], e["output_tokens"]) for e in mine}
        if len(served) < len(buckets):
            continue  # some bucket fits nowhere at this SLO: draw again
        entries += mine
        models.append({"name": name, "rate_rps": rate, "slo": {"ttft_ms": slo[0], "tpot_ms": slo[1]},
                       "buckets": [{"input_tokens": b[0], "output_tokens": b[1], "share": s}
                                   for b, s in zip(buckets, shares)]})
    workload = {"name": f"synthetic-{size}", "max_utilization": 0.9, "models": models, "gpus": gpus}
    profiles = {"entries": entries, "generator": f"bench/synthetic.py size={size} seed={seed}"}
    inst = Instance(f"{size}{'-binding' if binding else ''}", workload, profiles)
    if binding:
        inst = _bind(inst)
    return inst


def _bind(inst: Instance) -> Instance:
    """Cap the GPU types the unconstrained optimum spends most on at 50-70% of what it uses."""
    from gpumix.planner.capacity import build_problem
    from gpumix.planner.profiles import ProfileEntry
    from gpumix.planner.workload import load_workload_doc
    from gpumix.planner.errors import GpumixError
    from gpumix.planner.problem import Problem
    from gpumix.solvers.stage1.decompose import SolveParams, solve

    cat = load_catalog()
    workload = load_workload_doc(inst.workload, cat, need_shapes=False)
    profiles = tuple(ProfileEntry(**e) for e in inst.profiles["entries"])
    problem, _ = build_problem(workload, cat, profiles)
    sol = solve(problem)
    spend: dict[str, float] = {}
    used: dict[str, int] = {}
    for c, k in sol.replicas.items():
        spend[c.gpu] = spend.get(c.gpu, 0.0) + problem.config_cost(c) * k
        used[c.gpu] = used.get(c.gpu, 0) + c.tp * k
    top = sorted(spend, key=lambda g: (-spend[g], g))[:3]
    rng = random.Random(inst.name)
    share = {g: rng.uniform(0.5, 0.7) for g in top}
    while True:  # loosen until some plan exists (a big model may fit only on a capped type)
        caps = {g: max(1, int(used[g] * share[g])) for g in top}
        gpus = [dict(g, available=caps[g["name"]]) if g["name"] in caps else dict(g)
                for g in inst.workload["gpus"]]
        tight = Problem.restrict(problem, available={g: caps.get(g) for g in problem.available})
        try:
            solve(tight, SolveParams(time_limit=60))
            break
        except GpumixError:
            share = {g: min(1.0, v + 0.1) for g, v in share.items()}
    return Instance(inst.name, {**inst.workload, "gpus": gpus}, inst.profiles)
