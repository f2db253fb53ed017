"""Solver at scale: gpumix vs the monolithic MILP (PuLP + HiGHS, PuLP + CBC) on synthetic instances.

    python bench/solver.py                       # S M L XL, unlimited and binding availability
    python bench/solver.py --sizes S M --tenfold # also the baselines at 10x the time limit
    python bench/solver.py --markdown            # print the table as markdown for docs/benchmarks.md

Each run is a separate process (wall time includes interpreter start and file loading; peak memory
is that process's max RSS). gpumix runs as the real `gpumix plan` command; the baselines build the
plain MILP (C1-C3 of planner/problem.py) from the same files. Same time limit for everyone.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


LIMITS = {  # (unlimited availability, binding availability) time limits in seconds: the targets
    "S": (3.0, 10.0), "M": (3.0, 10.0), "L": (15.0, 60.0), "XL": (90.0, 90.0)}


def child(spec: dict) -> dict:
    """Run one job in this process; report cost, bound, status and peak RSS."""
    if spec["kind"] == "gpumix":
        from gpumix.cli.app import app

        try:
            app(args=spec["argv"], standalone_mode=False)
            code = 0
        except SystemExit as e:
            code = e.code or 0
        except Exception as e:  # noqa: BLE001 - report, do not crash the benchmark
            code = getattr(e, "exit_code", 1)
        out = {"exit": code}
        plan_path = Path(spec["plan"])
        if plan_path.exists():
            plan = json.loads(plan_path.read_text())
            out.update(status=plan["status"], cost=plan["cost_per_hour"], bound=plan["lower_bound_per_hour"])
    else:
        from monolithic import monolithic
        from gpumix.solvers.pipeline import load_problem

        _, problem, _ = load_problem(spec["workload"], spec["profiles"])
        status, cost, bound = monolithic(problem, spec["limit"], spec["kind"], spec.get("log"))
        out = {"status": status, "cost": cost, "bound": bound}
    out["peak_mb"] = peak_rss_mb()
    return out


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM starts afresh at exec; ru_maxrss would carry the forking
    parent's peak (a Linux quirk) and overstate small runs."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(spec: dict, timeout: float) -> dict:
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-W", "ignore", __file__, "--child", json.dumps(spec)],
                           capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - t0
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        res = json.loads(lines[-1]) if lines else {"status": f"crash ({p.returncode})"}
    except subprocess.TimeoutExpired:
        wall, res = time.perf_counter() - t0, {"status": "killed"}
    res["wall_s"] = wall
    return res


def gap(r: dict) -> float | None:
    if r.get("cost") is None or r.get("bound") is None:
        return None
    return max(r["cost"] - r["bound"], 0.0) / r["cost"] if r["cost"] > 0 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["S", "M", "L", "XL"])
    ap.add_argument("--variants", nargs="+", default=["unlimited", "binding"])
    ap.add_argument("--baselines", nargs="+", default=["highs", "cbc"], help="highs, cbc, or none")
    ap.add_argument("--tenfold", action="store_true", help="also run the baselines at 10x the limit (binding only)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from synthetic import generate

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="gpumix-bench-"))
    for size in args.sizes:
        for variant in args.variants:
            binding = variant == "binding"
            inst = generate(size, binding=binding)
            w, p = tmp / f"{inst.name}.workload.json", tmp / f"{inst.name}.profiles.json"
            w.write_text(json.dumps(inst.workload))
            p.write_text(json.dumps(inst.profiles))
            limit = LIMITS[size][binding]
            n_models, n_gpus = len(inst.workload["models"]), len(inst.workload["gpus"])
            plan = tmp / f"{inst.name}.plan.json"
            runs = [("gpumix", limit, {"kind": "gpumix", "plan": str(plan), "argv": [
                "plan", str(w), "--profiles", str(p), "--out", str(plan), "--time-limit", str(limit),
                "--quiet", "--no-baseline"]})]
            for b in (b for b in args.baselines if b != "none"):
                runs.append((f"{b}", limit, {"kind": b, "workload": str(w), "profiles": str(p), "limit": limit,
                                             "log": str(tmp / f"{inst.name}.{b}.log")}))
                if args.tenfold and binding:
                    runs.append((f"{b} x10", 10 * limit, {"kind": b, "workload": str(w), "profiles": str(p),
                                                          "limit": 10 * limit,
                                                          "log": str(tmp / f"{inst.name}.{b}10.log")}))
            results = {}
            for label, lim, spec in runs:
                r = measure(spec, timeout=lim * 2 + 120)
                results[label] = r
                g = gap(r)
                row = {"instance": inst.name, "models": n_models, "gpus": n_gpus, "solver": label, "limit_s": lim,
                       "status": r.get("status"), "cost": r.get("cost"), "bound": r.get("bound"), "gap": g,
                       "wall_s": r["wall_s"], "peak_mb": r.get("peak_mb")}
                rows.append(row)
                print(_fmt(row), flush=True)
            ours = results["gpumix"]
            for label, r in results.items():
                if label != "gpumix" and r.get("cost") and ours.get("cost"):
                    print(f"    gpumix/{label}: cost x{ours['cost'] / r['cost']:.4f}, "
                          f"time x{ours['wall_s'] / r['wall_s']:.2f}", flush=True)
    if args.markdown:
        print()
        print("| instance | models x GPU types | solver | limit s | status | $/h | bound $/h | gap | wall s | peak MB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['instance']} | {r['models']} x {r['gpus']} | {r['solver']} | {r['limit_s']:g} | {r['status']} | "
                  f"{_num(r['cost'])} | {_num(r['bound'])} | {_pct(r['gap'])} | {r['wall_s']:.1f} | "
                  f"{_num(r['peak_mb'], 0)} |")


def _num(x, digits=2) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _pct(x) -> str:
    return "-" if x is None else f"{x:.3%}"


def _fmt(r: dict) -> str:
    return (f"{r['instance']:<12} {r['solver']:<9} {str(r['status']):<11} cost {_num(r['cost']):>12} "
            f"bound {_num(r['bound']):>12} gap {_pct(r['gap']):>8} wall {r['wall_s']:7.1f}s "
            f"peak {_num(r['peak_mb'], 0):>6} MB")


if __name__ == "__main__":
    main()
