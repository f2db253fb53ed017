"""`gpumix sweep --plot`: cost against demand or SLO as a figure.

matplotlib (the optional extra `gpumix[plot]`) is imported inside plot_sweep only; nothing else in
the CLI imports this module at import time.
"""
from __future__ import annotations

import io
from pathlib import Path

from gpumix.planner.plan import write_atomic


def plot_sweep(results, path: Path) -> None:
    """Cost vs the swept axis (demand scale, else TPOT): one line per TPOT on a grid, the best single
    GPU type dashed, infeasible points left out. A single line also gets a panel of its GPU mix."""
    from matplotlib.figure import Figure  # lazy: the optional `plot` extra; no pyplot, no global state

    scales = sorted({r.point.scale for r in results})
    by_scale = len(scales) > 1 or all(r.point.tpot_ms is None for r in results)  # `--scale 1` alone: one scale
    series: dict = {}
    for r in results:
        series.setdefault(r.point.tpot_ms if by_scale else None, []).append(r)
    one = len(series) == 1
    fig = Figure(figsize=(7, 5.6 if one else 4.2), layout="constrained")
    ax, mix_ax = (fig.subplots(2, 1, sharex=True, height_ratios=[3, 2]) if one else (fig.add_subplot(), None))
    x_of = (lambda r: r.point.scale) if by_scale else (lambda r: r.point.tpot_ms)
    for i, (key, rs) in enumerate(sorted(series.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))):
        color, suffix = f"C{i}", ("" if key is None else f", TPOT {key:g} ms")
        ok = [r for r in rs if r.cost is not None]
        ax.plot([x_of(r) for r in ok], [r.cost for r in ok], "o-", color=color, label=f"gpumix plan{suffix}")
        single = [r for r in ok if r.best_single is not None]
        if single:
            ax.plot([x_of(r) for r in single], [r.best_single[1] for r in single], "s--", color=color, alpha=0.6,
                    label=f"best single GPU type{suffix}")
        for r in rs:
            if r.cost is None:
                ax.axvline(x_of(r), color=color, alpha=0.3, linestyle=":", label=f"{r.status}{suffix}")
    ax.set_ylabel("$ per hour")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    keep = {lab: h for h, lab in zip(handles, labels)}  # one legend entry per label
    ax.legend(keep.values(), keep.keys(), fontsize=7)
    ax.set_title("Fleet cost: gpumix plan vs best single GPU type", fontsize=10)
    if mix_ax is not None:
        ok = [r for r in results if r.cost is not None]
        types = sorted({g for r in ok for g, _ in r.gpus})
        xs = [x_of(r) for r in ok]
        if by_scale:
            widths = [x * 0.35 for x in xs]  # equal-looking bars on a log axis
        else:
            gap = min((b - a for a, b in zip(sorted(xs), sorted(xs)[1:])), default=10)
            widths = [gap * 0.6] * len(xs)
        bottom = [0] * len(ok)
        for j, g in enumerate(types):
            n = [dict(r.gpus).get(g, 0) for r in ok]
            mix_ax.bar(xs, n, widths, bottom=bottom, label=g, color=f"C{j % 10}", alpha=0.8)
            bottom = [b + k for b, k in zip(bottom, n)]
        mix_ax.set_ylabel("GPUs in the plan")
        mix_ax.grid(True, axis="y", alpha=0.3)
        mix_ax.legend(fontsize=7, ncols=min(len(types), 4) or 1)
    bottom_ax = mix_ax if mix_ax is not None else ax
    if by_scale:
        bottom_ax.set_xscale("log", base=2)
        bottom_ax.set_xticks(scales, [f"{s:g}" for s in scales])
        bottom_ax.minorticks_off()
        bottom_ax.set_xlabel("demand scale (x every model's rate_rps)")
    else:
        bottom_ax.set_xlabel("TPOT SLO (ms)")
    _save(fig, path)


def plot_schedule(plan: dict, path: Path) -> None:
    """`gpumix plan --plot` for a plan with periods: demand per model, GPUs per type (stacked) and
    cost per period against the peak-sized static plan, over the periods."""
    from matplotlib.figure import Figure  # lazy: the optional `plot` extra; no pyplot, no global state

    periods = plan["periods"]
    hours = plan["horizon"]["period_hours"]
    x = [e["index"] * hours for e in periods]
    edges = x + [len(periods) * hours]  # step lines run to the end of the last period

    def steps(values: list[float]) -> list[float]:
        return values + values[-1:]
    fig = Figure(figsize=(8, 8), layout="constrained")
    demand_ax, gpu_ax, cost_ax = fig.subplots(3, 1, sharex=True, height_ratios=[2, 2, 1.5])
    models = sorted({r_model for e in periods for r_model in _rates(e)})
    for i, m in enumerate(models):
        demand_ax.step(edges, steps([_rates(e).get(m, 0.0) for e in periods]), where="post", color=f"C{i % 10}",
                       label=m)
    demand_ax.set_ylabel("req/s")
    demand_ax.set_title("Demand per model", fontsize=10)
    demand_ax.legend(fontsize=7, ncols=2)
    demand_ax.grid(True, alpha=0.3)
    types = sorted({g for e in periods for g in e["gpus"]})
    bottom = [0] * len(periods)
    for j, g in enumerate(types):
        n = [e["gpus"].get(g, 0) for e in periods]
        gpu_ax.bar(x, n, hours * 0.9, bottom=bottom, align="edge", label=g, color=f"C{j % 10}", alpha=0.85)
        bottom = [b + k for b, k in zip(bottom, n)]
    gpu_ax.set_ylabel("GPUs")
    gpu_ax.set_title("GPUs per type in the schedule", fontsize=10)
    gpu_ax.legend(fontsize=7, ncols=min(len(types), 6) or 1)
    gpu_ax.grid(True, axis="y", alpha=0.3)
    cost_ax.step(edges, steps([e["cost_per_hour"] for e in periods]), where="post", color="C0", label="schedule")
    peak = (plan.get("baseline") or {}).get("peak_static")
    if peak:
        cost_ax.axhline(peak["cost_per_hour"], color="C3", linestyle="--", label="peak-sized static plan")
    cost_ax.set_ylabel("$ per hour")
    cost_ax.set_xlabel(f"hours from the start of the horizon ({plan['horizon']['timezone']})")
    cost_ax.legend(fontsize=7)
    cost_ax.grid(True, alpha=0.3)
    _save(fig, path)


def _rates(entry: dict) -> dict[str, float]:
    """req/s per model in one period: the sum of its groups' routes."""
    out: dict[str, float] = {}
    for g in entry["replicas"]:
        out[g["model"]] = out.get(g["model"], 0.0) + sum(r["rps"] for r in g["routes"])
    return out


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()  # drawn in memory, then written atomically: a full disk leaves no half a PNG
    fig.savefig(buf, format=Path(path).suffix.lstrip(".").lower() or "png")
    write_atomic(path, buf.getvalue())
