"""Simulator speed: the l-size plan of bench/solver.py (200 models) for 600 simulated seconds.

    python bench/simulate.py                      # L, 600 s, all cores
    python bench/simulate.py --size M --duration 60 --processes 1

Builds the instance with bench/synthetic.py (the generator bench/solver.py uses; its capacities
are roofline estimates of each model's base shape), gives every model its base shape as `config`
and the synthetic GPU names (`H100@neo`: a catalog GPU at another price) their catalog spec in an
efficiency file, plans it with `gpumix plan --efficiency`, and runs the simulator in-process on the
roofline's step times (no profile has fits). Reports wall time, events (engine decisions: a
prefill, or a jump over decode steps), engine steps and events/s.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def base_gpu(name: str) -> str:
    return name.split("@", 1)[0]


def fleet_files(inst, tmp: Path) -> tuple[Path, Path, Path]:
    """The synthetic instance as files the roofline can simulate: each model's `config` (its base
    shape from data/models) and an efficiency file giving `H100@neo` etc. their catalog GPU's spec."""
    from gpumix.data import DATA_DIR
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.efficiency import spec_dict

    cat = load_catalog()
    index = {m["name"]: m["config"] for m in json.loads((DATA_DIR / "models" / "index.json").read_text())["models"]}
    models = [dict(m, config=str(DATA_DIR / "models" / index[m["name"].split("-", 1)[1]]))
              for m in inst.workload["models"]]
    gpus = {}
    for g in inst.workload["gpus"]:
        if cat.gpu(g["name"]) is None:
            spec = cat.gpu(base_gpu(g["name"]))
            gpus[g["name"]] = {**cat.gpu_efficiency(spec.name), "spec": spec_dict(spec)}
    w, p, e = tmp / "workload.json", tmp / "profiles.json", tmp / "efficiency.json"
    w.write_text(json.dumps({**inst.workload, "models": models}))
    p.write_text(json.dumps(inst.profiles))
    e.write_text(json.dumps({"schema_version": 1, "gpus": gpus}))
    return w, p, e


def build(size: str, tmp: Path) -> Path:
    import subprocess

    from synthetic import generate

    w, p, e = fleet_files(generate(size), tmp)
    plan = tmp / "plan.json"
    r = subprocess.run([sys.executable, "-m", "gpumix", "plan", str(w), "--profiles", str(p), "--efficiency", str(e),
                        "--out", str(plan), "--time-limit", "15", "--quiet", "--no-baseline"],
                       capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"gpumix plan failed: {r.stderr.strip()}")
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="L")
    ap.add_argument("--duration", type=float, default=600.0)
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--router", default="plan")
    ap.add_argument("--keep", help="folder to keep the plan, fits and report in")
    args = ap.parse_args()
    from gpumix.profiler.simulate.run import SimOptions, simulate

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpumix-sim-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    plan = build(args.size, tmp)
    setup_s = time.perf_counter() - t0
    opts = SimOptions(duration_s=args.duration, seed=args.seed, processes=args.processes,
                      router=args.router)
    t0 = time.perf_counter()
    report, stats = simulate(plan, None, opts)
    total = time.perf_counter() - t0
    (tmp / "report.json").write_text(json.dumps(report))
    reqs = sum(m["requests"] for m in report["models"])
    groups = [g for g in report["groups"] if g.get("passed") is not None]
    print(f"size {args.size}: {len(report['models'])} models, {len(groups)} groups, {stats['replicas']} replicas, "
          f"{reqs:,} requests over {args.duration:g} simulated s (plan + fits built in {setup_s:.1f} s)")
    print(f"simulate: {total:.1f} s wall (engines {stats['wall_s']:.1f} s, {stats['processes']} processes, "
          f"router {args.router}), {stats['events']:,} events, {stats['steps']:,} engine steps, "
          f"{stats['events'] / total:,.0f} events/s, {stats['steps'] / total:,.0f} steps/s, "
          f"{reqs / total:,.0f} requests/s")
    print(f"groups passed {sum(g['passed'] for g in groups)}/{len(groups)}; report in {tmp / 'report.json'}")


if __name__ == "__main__":
    main()
