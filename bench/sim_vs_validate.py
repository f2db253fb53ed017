"""Agreement of `gpumix simulate` with `gpumix validate` on this CPU.

    python bench/sim_vs_validate.py                    # 0.5x, 0.9x, 2x planned load, 20 s each
    python bench/sim_vs_validate.py --duration 30 --scales 0.5 0.9 2

One small Llama-shaped model, two buckets, profiled here with `gpumix profile` (the latency fit the
simulator steps with and the slots validate builds), planned with `gpumix plan --profiles`; then at
each load scale the same plan (routes x scale), the same profile, arrivals and seed go to
`gpumix validate` (the torch runtime, real time) and `gpumix simulate`. Per group: TTFT and TPOT
p50/p99 (simulated / measured - 1, target within 20%) and achieved rate (target within 5%), as a
markdown table. Run it on a quiet machine: validate measures wall time, the fit was measured
earlier, and any other load on the cores moves the two apart.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIG = {"hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 512,
          "num_hidden_layers": 3, "vocab_size": 2048}
WORKLOAD = """
models:
  - name: small
    config: small.json
    rate_rps: {rate}
    slo: {{ttft_ms: 1500, tpot_ms: 100}}
    buckets:
      - {{input_tokens: 48, output_tokens: 16, share: 0.5}}
      - {{input_tokens: 96, output_tokens: 32, share: 0.5}}
gpus:
  - {{name: {gpu}, price_per_hour: 0.1}}
max_utilization: 0.9
"""
GPU = "benchcpu"
PROFILE = ["--gpu-name", GPU, "--prefill-lens", "16,48,96", "--batches", "1,4,16", "--contexts", "32,128",
           "--iters", "3", "--rounds", "2", "--dtype", "fp32", "--threads", "1", "-q"]


def gpumix(*args, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "gpumix", *map(str, args)], capture_output=True, text=True)
    if check and r.returncode not in (0, 1):
        raise SystemExit(f"gpumix {' '.join(map(str, args))} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    return r


def rel(sim, real) -> float | None:
    if sim is None or real is None or real == 0:
        return None
    return sim / real - 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--scales", type=float, nargs="+", default=[0.5, 0.9, 2.0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", help="folder to keep the files in")
    ap.add_argument("--reprofile", action="store_true",
                    help="profile again right before each load scale and simulate with that fit (less drift "
                         "on a shared machine; the plan stays the first profile's)")
    args = ap.parse_args()
    d = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="gpumix-agree-"))
    d.mkdir(parents=True, exist_ok=True)
    (d / "small.json").write_text(json.dumps(CONFIG))
    (d / "wl.yaml").write_text(WORKLOAD.format(rate=1, gpu=GPU))
    gpumix("profile", d / "wl.yaml", "--out", d / "profiles.json", *PROFILE)
    entries = json.loads((d / "profiles.json").read_text())["entries"]
    cap = 1 / sum(0.5 / e["max_rps"] for e in entries)  # one replica's capacity at the 50/50 mix
    rate = round(0.9 * cap, 3)  # one replica at the workload's max_utilization
    (d / "wl.yaml").write_text(WORKLOAD.format(rate=rate, gpu=GPU))
    gpumix("plan", d / "wl.yaml", "--profiles", d / "profiles.json", "--out", d / "plan.json", "-q")
    plan = json.loads((d / "plan.json").read_text())
    print(f"profile capacity {cap:.2f} req/s per replica; planned {rate:.2f} req/s "
          f"({sum(g['count'] for g in plan['replicas'])} replica(s)); {args.duration:g} s per run", flush=True)
    rows = []
    for s in args.scales:
        p = json.loads(json.dumps(plan))
        for g in p["replicas"]:
            for r in g["routes"]:
                r["rps"] *= s
        pf = d / f"plan-x{s:g}.json"
        pf.write_text(json.dumps(p))
        common = ["--duration", args.duration, "--seed", args.seed]
        prof = d / "profiles.json"
        if args.reprofile:
            prof = d / f"profiles-x{s:g}.json"
            gpumix("profile", d / "wl.yaml", "--out", prof, *PROFILE)
        common += ["--profiles", prof]
        gpumix("validate", pf, "--gpu-name", GPU, *common, "--report", d / f"validate-x{s:g}.json", "-q")
        gpumix("simulate", pf, *common, "--report", d / f"simulate-x{s:g}.json", "-q", "--processes", "1")
        real = json.loads((d / f"validate-x{s:g}.json").read_text())["groups"]
        sim = json.loads((d / f"simulate-x{s:g}.json").read_text())["groups"]
        for a, b in zip(real, sim):
            n_real, n_sim = a.get("replicas_run", 1), b["replicas_run"]
            row = {"scale": s, "group": f"{a['model']} {a['gpu']} TP{a['tp']} x{a['count']}",
                   "rate_real": a.get("achieved_rps"), "rate_sim": b.get("achieved_rps") * n_real / n_sim,
                   "passed_real": a.get("passed"), "passed_sim": b.get("passed")}
            for m in ("ttft_ms", "tpot_ms"):
                for q in ("p50", "p99"):
                    row[f"{m}_{q}"] = ((a.get(m) or {}).get(q), (b.get(m) or {}).get(q))
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print("| load | group | TTFT p50 ms val / sim | TTFT p99 | TPOT p50 | TPOT p99 | req/s val / sim | verdict val / sim |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cells = []
        for k in ("ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99"):
            real, sim = r[k]
            e = rel(sim, real)
            cells.append(f"{_n(real)} / {_n(sim)} ({'-' if e is None else f'{e:+.0%}'})"
                         + ("" if e is None or abs(e) <= 0.20 else " **miss**"))
        e = rel(r["rate_sim"], r["rate_real"])
        rate = f"{_n(r['rate_real'], 2)} / {_n(r['rate_sim'], 2)} ({'-' if e is None else f'{e:+.1%}'})" + \
            ("" if e is None or abs(e) <= 0.05 else " **miss**")
        verdict = f"{_v(r['passed_real'])} / {_v(r['passed_sim'])}"
        print(f"| {r['scale']:g}x | {r['group']} | " + " | ".join(cells) + f" | {rate} | {verdict} |")
    print(f"\nfiles in {d}")


def _n(x, digits=1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def _v(p) -> str:
    return {True: "pass", False: "fail", None: "-"}[p]


if __name__ == "__main__":
    main()
