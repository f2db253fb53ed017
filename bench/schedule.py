"""Schedules at scale: 10, 50 and 200 synthetic models x 24 hourly periods (`gpumix plan`).

    python bench/schedule.py                    # S M L: 10, 50, 200 models
    python bench/schedule.py --sizes S M --markdown

Each model of bench/synthetic.py gets a day of rates: its synthetic rate at its peak hour (drawn
uniformly), a quarter of it at the opposite hour, a cosine between (peak to trough 4:1), and the
catalog config.json of its base model, so the default start costs (weights / 0.33 GB/s x price)
apply. Each run is a separate `gpumix plan` process (wall time includes start-up and loading); the
figures are its wall time, status, total, bound, gap and savings against the peak-sized static plan.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LIMITS = {"S": 30.0, "M": 30.0, "L": 120.0}  # seconds: the targets (S as M)
TARGET_GAP = {"S": 0.01, "M": 0.01, "L": 0.02}
START_S = 2.0  # of each target left to the process: interpreter start-up and imports run before --time-limit
PERIODS = 24
TROUGH = 0.25  # of the peak


def diurnal(inst, seed: int = 1) -> dict:
    """The synthetic workload with 24 hourly rates per model and its base model's config.json."""
    from gpumix.data import DATA_DIR

    rng = random.Random(f"{inst.name}-{seed}")
    models = []
    for m in inst.workload["models"]:
        base = m["name"].split("-", 1)[1]
        peak_hour = rng.uniform(0, 24)
        r = m["rate_rps"]
        rates = [round(max(1e-3, r * (TROUGH + (1 - TROUGH) * (0.5 + 0.5 * math.cos(2 * math.pi * (t - peak_hour)
                                                                                      / PERIODS)))), 3)
                 for t in range(PERIODS)]
        models.append({**m, "rate_rps": rates, "config": str(DATA_DIR / "models" / f"{base}.json")})
    return {**inst.workload, "name": f"{inst.workload['name']}-diurnal", "period_hours": 1, "models": models}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["S", "M", "L"])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from synthetic import generate

    tmp = Path(tempfile.mkdtemp(prefix="gpumix-schedule-bench-"))
    rows = []
    for size in args.sizes:
        inst = generate(size)
        w, p, plan = tmp / f"{size}.workload.json", tmp / f"{size}.profiles.json", tmp / f"{size}.plan.json"
        w.write_text(json.dumps(diurnal(inst)))
        p.write_text(json.dumps(inst.profiles))
        limit = LIMITS[size]
        t0 = time.perf_counter()
        run = subprocess.run([sys.executable, "-W", "ignore", "-m", "gpumix", "plan", str(w), "--profiles", str(p),
                              "--out", str(plan), "--time-limit", str(limit - START_S), "--quiet"],
                             capture_output=True, text=True, timeout=limit * 2 + 120)
        wall = time.perf_counter() - t0
        row = {"size": size, "models": len(inst.workload["models"]), "gpus": len(inst.workload["gpus"]),
               "limit_s": limit, "wall_s": wall, "exit": run.returncode}
        if run.returncode == 0:
            doc = json.loads(plan.read_text())
            peak = (doc["baseline"] or {}).get("peak_static") or {}
            row.update(status=doc["status"], total=doc["total_cost"], bound=doc["lower_bound_total"], gap=doc["gap"],
                       per_period=doc["baseline"]["per_period"]["total_cost"], peak_static=peak.get("total_cost"),
                       savings=peak.get("savings"), method=doc["solver"]["method"],
                       starts=sum(e["starts"] for e in doc["periods"]))
            row["meets"] = wall <= limit and doc["gap"] <= TARGET_GAP[size]
        else:
            row["error"] = (run.stderr or run.stdout).strip().splitlines()[-1:]
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.markdown:
        print()
        print("| models x GPU types x periods | limit s | wall s | status | total $ | bound $ | gap | "
              "per-period $ | peak-static $ | savings | target met |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if "total" not in r:
                print(f"| {r['models']} x {r['gpus']} x {PERIODS} | {r['limit_s']:g} | {r['wall_s']:.1f} | "
                      f"exit {r['exit']} | - | - | - | - | - | - | no |")
                continue
            print(f"| {r['models']} x {r['gpus']} x {PERIODS} | {r['limit_s']:g} | {r['wall_s']:.1f} | {r['status']} | "
                  f"{r['total']:,.2f} | {r['bound']:,.2f} | {r['gap']:.3%} | {r['per_period']:,.2f} | "
                  f"{r['peak_static'] or 0:,.2f} | {r['savings'] or 0:.1%} | {'yes' if r['meets'] else 'no'} |")


if __name__ == "__main__":
    main()
