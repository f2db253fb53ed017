"""Stage-2 timing on synthetic instance-shaped problems: `python bench/stage2.py M L [--time-limit S]`.

bench/synthetic.py generate(size) gives the workload and throughput table; this script adds instance
shapes per GPU type: big GPUs (H100, H200, A100, B200, MI300X) only as 8-GPU nodes at 8 x the
per-GPU price, the others as 1-GPU (10% dearer per GPU), 4-GPU and 8-GPU nodes (2% cheaper per GPU).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from synthetic import generate
from gpumix.solvers.pipeline import PlanOptions, plan_workload

BIG = ("H100", "H200", "A100", "B200", "MI300X")


def shapes(gpus: list[dict]) -> list[dict]:
    out = []
    for g in gpus:
        name, p = g["name"], g["price_per_hour"]
        slug = name.lower().replace("@", "-")
        if name.split("@")[0].startswith(BIG):
            out.append({"name": f"{slug}-8x", "gpu": name, "gpus": 8, "price_per_hour": round(8 * p, 5)})
        else:
            out += [{"name": f"{slug}-1x", "gpu": name, "gpus": 1, "price_per_hour": round(1.1 * p, 5)},
                    {"name": f"{slug}-4x", "gpu": name, "gpus": 4, "price_per_hour": round(4 * p, 5)},
                    {"name": f"{slug}-8x", "gpu": name, "gpus": 8, "price_per_hour": round(8 * 0.98 * p, 5)}]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", nargs="*", default=["M", "L"])
    ap.add_argument("--time-limit", type=float, default=300.0)
    ap.add_argument("--spare-nodes", type=int, default=0)
    args = ap.parse_args()
    for size in args.sizes:
        inst = generate(size)
        wl = dict(inst.workload, instances=shapes(inst.workload["gpus"]))
        with tempfile.TemporaryDirectory() as d:
            wp, pp = Path(d) / "w.json", Path(d) / "p.json"
            wp.write_text(json.dumps(wl))
            pp.write_text(json.dumps(inst.profiles))
            t0 = time.perf_counter()
            r = plan_workload(wp, pp, PlanOptions(time_limit=args.time_limit, baseline=False,
                                                  spare_nodes=args.spare_nodes))
            wall = time.perf_counter() - t0
        p = r.plan
        print(json.dumps({"size": size, "models": len(p["models"]), "instance_types": len(wl["instances"]),
                          "nodes": len(p["nodes"]), "status": p["status"], "cost": p["cost_per_hour"],
                          "bound": p["lower_bound_per_hour"], "gap": round(p["gap"], 6), "wall_s": round(wall, 2),
                          "iterations": p["solver"]["iterations"]}))


if __name__ == "__main__":
    main()
