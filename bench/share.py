"""Shared GPU sets on long-tail workloads: dedicated-only vs --share-gpus cost and solve time.

    python bench/share.py [N ...]        (default: 20 100)

N models drawn round-robin from ten 1-14B catalog shapes (each a separate fine-tune with its own
weights), Zipf rates 1.5 / i^1.2 req/s, two buckets (512/128 70%, 2048/256 30%), SLO 2 s TTFT,
100 ms TPOT, every catalog GPU at catalog prices, roofline capacities. N = 20 is
data/examples/longtail.yaml. Prints one Markdown row per N (docs/benchmarks.md, "Sharing").
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import yaml

from gpumix.solvers.pipeline import PlanOptions, plan_workload

BASES = ["llama-3.1-8b", "qwen2.5-7b", "mistral-7b", "llama-3.2-3b", "qwen2.5-14b", "phi-3-mini", "gemma-2-9b",
         "qwen2.5-1.5b", "llama-3.2-1b", "qwen2.5-3b"]
MODELS_DIR = Path(__file__).resolve().parent.parent / "data" / "models"


def longtail(n: int) -> dict:
    return {"name": f"longtail-{n}", "models": [{
        "name": f"ft{i:03d}-{BASES[i % len(BASES)]}",
        "config": str(MODELS_DIR / f"{BASES[i % len(BASES)]}.json"),
        "rate_rps": round(1.5 / (i + 1) ** 1.2, 4),
        "slo": {"ttft_ms": 2000, "tpot_ms": 100},
        "buckets": [{"input_tokens": 512, "output_tokens": 128, "share": 0.7},
                    {"input_tokens": 2048, "output_tokens": 256, "share": 0.3}]} for i in range(n)]}


def run(n: int, time_limit: float = 120.0) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"longtail-{n}.yaml"
        path.write_text(yaml.safe_dump(longtail(n)))
        ded = plan_workload(path, options=PlanOptions(time_limit=time_limit, baseline=False))
        t0 = time.perf_counter()
        shared = plan_workload(path, options=PlanOptions(time_limit=time_limit, share_gpus=True))
        wall = time.perf_counter() - t0
    p = shared.plan
    return {"n": n, "dedicated": ded.plan["cost_per_hour"], "dedicated_status": ded.plan["status"],
            "shared": p["cost_per_hour"], "bound": p["lower_bound_per_hour"], "status": p["status"],
            "sets": sum(g["count"] for g in p["shared"]), "wall": wall}


def main(argv: list[str]) -> None:
    sizes = [int(a) for a in argv] or [20, 100]
    print("| models | dedicated-only $/h | shared $/h | shared / dedicated | shared sets | bound $/h | status | "
          "plan --share-gpus wall |")
    print("|---|---|---|---|---|---|---|---|")
    for n in sizes:
        r = run(n)
        print(f"| {n} | {r['dedicated']:,.2f} ({r['dedicated_status']}) | {r['shared']:,.2f} | "
              f"{r['shared'] / r['dedicated']:.1%} | {r['sets']} | {r['bound']:,.2f} | {r['status']} | "
              f"{r['wall']:.1f} s |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
