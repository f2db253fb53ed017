"""Rich tables and report lines for people. Machine output (JSON) never goes through here."""
from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.table import Table

COMPACT_ABOVE = 12  # models: one table per model up to this, one table in all beyond


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _precision(g: dict) -> str:
    """'bf16', 'fp8', 'awq+kv:fp8': the group's weights and, when not the model's dtype, KV cache."""
    q, kv = g.get("quantization", "none"), g.get("kv_cache_dtype", "auto")
    return ("bf16" if q == "none" else q) + ("" if kv == "auto" else f"+kv:{kv}")


def _quantized(groups: list[dict]) -> bool:
    return any(_precision(g) != "bf16" for g in groups)


def _group_rows(table: Table, groups: list[dict], with_model: bool, with_precision: bool = False) -> None:
    for g in groups:
        rps = sum(r["rps"] for r in g["routes"])
        srcs = sorted({r["source"] for r in g["routes"]})
        row = [g["gpu"], str(g["tp"]), *([_precision(g)] if with_precision else []), str(g["count"]),
               f"{rps:,.2f}", f"{g['utilization']:.0%}", _money(g["cost_per_hour"]), "/".join(srcs)]
        table.add_row(*([g["model"]] if with_model else []), *row)


def _group_table(title: str | None, with_model: bool, with_precision: bool = False) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    if with_model:
        t.add_column("model", no_wrap=True)
    t.add_column("GPU")
    t.add_column("TP", justify="right")
    if with_precision:
        t.add_column("precision")
    t.add_column("replicas", justify="right")
    t.add_column("req/s", justify="right")
    t.add_column("util", justify="right")
    t.add_column("$/h", justify="right")
    t.add_column("capacity")
    return t


def plan_report(console: Console, result) -> None:
    plan = result.plan
    groups_by_model: dict[str, list[dict]] = {}
    for g in plan["replicas"]:
        groups_by_model.setdefault(g["model"], []).append(g)
    quantized = _quantized(plan["replicas"])
    if len(plan["models"]) <= COMPACT_ABOVE:
        for m in plan["models"]:
            if m.get("shared") and not groups_by_model.get(m["name"]):
                continue  # in the shared table below
            t = _group_table(f"{m['name']}: {m['rate_rps']:,.2f} req/s, {m['gpus']} GPUs, "
                             f"{_money(m['cost_per_hour'])}/h", with_model=False, with_precision=quantized)
            _group_rows(t, groups_by_model.get(m["name"], []), with_model=False, with_precision=quantized)
            console.print(t)
            console.print()
    else:
        t = _group_table(None, with_model=True, with_precision=quantized)
        _group_rows(t, plan["replicas"], with_model=True, with_precision=quantized)
        console.print(t)
        console.print()

    if plan.get("shared"):
        shared(console, plan)
    gt = Table(title="GPUs", title_justify="left", show_edge=False, pad_edge=False)
    for col, just in (("GPU", "left"), ("used", "right"), ("available", "right"),
                      ("$/GPU-h", "right"), ("$/h", "right")):
        gt.add_column(col, justify=just)
    for g in plan["gpus"]:
        avail = "unlimited" if g["available"] is None else str(g["available"])
        gt.add_row(g["name"], str(g["used"]), avail, _money(g["price_per_gpu_hour"]), _money(g["cost_per_hour"]))
    console.print(gt)
    console.print()

    if plan.get("nodes") is not None:
        nodes(console, plan)
    if plan.get("partial"):
        console.print("partial plan: " + ", ".join(f"{m['name']} {m['served_fraction']:.1%}"
                                                   for m in plan["models"]) + " of demand served")
    if plan.get("changes") is not None:
        changes(console, plan)
    console.print(f"cost {_money(plan['cost_per_hour'])}/h, {plan['status']}: lower bound "
                  f"{_money(plan['lower_bound_per_hour'])}/h, gap {plan['gap']:.3%}")
    console.print(f"solved in {result.wall_s:.2f}s ({result.solution.method})", style="dim")
    if plan.get("baseline") is not None:
        base = plan["baseline"]["best_single_gpu"]
        if base:
            console.print(f"best single GPU type: {base['gpu']} at {_money(base['cost_per_hour'])}/h; "
                          f"this plan saves {base['savings']:.1%}")
        else:
            console.print("best single GPU type: none can serve every model alone")


def _attention(s) -> str:
    """MLA with its latent rank, or GQA/MHA with heads/KV heads x head dim."""
    if s.is_mla:
        return f"MLA {s.num_heads}h r{s.kv_lora_rank}"
    return f"{'MHA' if s.num_kv_heads == s.num_heads else 'GQA'} {s.num_heads}/{s.num_kv_heads}x{s.head_dim}"


def catalog(console: Console, cat, what: str) -> None:
    if what == "gpus":
        t = Table(show_edge=False, pad_edge=False)
        for col in ("GPU", "mem GB", "HBM GB/s", "BF16 TFLOPS", "FP8 TFLOPS", "link GB/s", "GPUs/node",
                    "$/GPU-h", "spot $/GPU-h"):
            t.add_column(col, justify="left" if col == "GPU" else "right", no_wrap=col == "GPU")
        for g in cat.gpus.values():
            t.add_row(g.name, f"{g.memory_gb:g}", f"{g.memory_bandwidth_gbps:g}", f"{g.bf16_tflops:g}",
                      "-" if g.fp8_tflops is None else f"{g.fp8_tflops:g}", f"{g.interconnect_gbps:g}",
                      str(g.gpus_per_node),
                      "-" if g.price_per_hour is None else f"{g.price_per_hour:.3f}",
                      "-" if g.spot_price_per_hour is None else f"{g.spot_price_per_hour:.3f}")
    else:
        t = Table(show_edge=False, pad_edge=False)
        for col in ("model", "params B", "active B", "layers", "attention", "window", "experts", "KV KiB/tok"):
            t.add_column(col, justify="left" if col in ("model", "attention") else "right",
                         no_wrap=col in ("model", "attention"))
        for name, s in cat.models.items():
            t.add_row(name, f"{s.params / 1e9:.1f}", f"{s.active_params / 1e9:.1f}", str(s.num_layers),
                      _attention(s), f"{s.sliding_window} x{s.sliding_layers}" if s.sliding_window else "-",
                      f"{s.experts_per_token}/{s.num_experts}" if s.is_moe else "-",
                      f"{s.kv_bytes_per_token(1) / 1024:.0f}")  # TP 1, BF16, every layer full
    console.print(t)


def nodes(console: Console, plan: dict) -> None:
    t = Table(title=f"Nodes ({len(plan['nodes'])})", title_justify="left", show_edge=False, pad_edge=False)
    for col, just in (("instance", "left"), ("region", "left"), ("GPUs", "right"), ("$/h", "right"),
                      ("replicas (model TP: GPU ids)", "left")):
        t.add_column(col, justify=just)
    for nd in plan["nodes"]:
        reps = "; ".join([f"{r['model']} TP{r['tp']}: {','.join(map(str, r['gpu_ids']))}" for r in nd["replicas"]]
                         + [f"shared set #{r['group']} TP{r['tp']}: {','.join(map(str, r['gpu_ids']))}"
                            for r in nd.get("shared") or ()])
        t.add_row(nd["instance"] + (" (spot)" if nd.get("spot") else ""), nd["region"],
                  f"{nd['gpus']} x {nd['gpu']}", _money(nd["price_per_hour"]), reps)
    console.print(t)
    console.print()


def changes(console: Console, plan: dict) -> None:
    ch = plan["changes"]
    for verb in ("start", "stop", "keep"):
        rows = ch.get(verb, [])
        n = sum(r.get("count", 1) for r in rows)
        console.print(f"{verb} {n} replica{'s' if n != 1 else ''}", style="bold")
        for r in rows:
            where = f" on node {r['node']} {r['instance']}" if r.get("instance") else ""
            count = f"{r['count']} x " if "count" in r else ""
            console.print(f"  {count}{r['model']} {r['gpu']} TP{r['tp']}{' spot' if r.get('spot') else ''}{where}",
                          markup=False)
    churn = plan.get("churn") or {}
    if churn:
        console.print(f"churn: {churn['replicas_started']} started at {_money(churn['cost_per_replica_started'])}"
                      f" each; cost + churn {_money(churn['objective_per_hour'])}/h")
    console.print()


def shared(console: Console, plan: dict) -> None:
    """Shared GPU sets: which models share which GPUs, their time shares and memory (one row a model)."""
    t = Table(title=f"Shared GPU sets ({sum(g['count'] for g in plan['shared'])})", title_justify="left",
              show_edge=False, pad_edge=False)
    for col, just in (("#", "right"), ("GPU", "left"), ("TP", "right"), ("sets", "right"), ("$/h", "right"),
                      ("model", "left"), ("req/s", "right"), ("time", "right"), ("GB/GPU", "right")):
        t.add_column(col, justify=just, no_wrap=col == "model")
    for i, g in enumerate(plan["shared"]):
        for j, e in enumerate(g["models"]):
            head = [str(i), g["gpu"], str(g["tp"]), str(g["count"]), _money(g["cost_per_hour"])] if j == 0 else [""] * 5
            t.add_row(*head, e["model"], f"{sum(r['rps'] for r in e['routes']):,.2f}", f"{e['time_fraction']:.0%}",
                      f"{e['memory_gb_per_gpu']:.1f}")
        t.add_row("", "", "", "", "", "(set total)", "", f"{g['utilization']:.0%}",
                  f"{g['memory_gb_per_gpu']:.1f}/{g['memory_budget_gb_per_gpu']:.1f}", end_section=True)
    console.print(t)
    ded = (plan.get("solver") or {}).get("dedicated_only_cost_per_hour")
    if ded:
        console.print(f"dedicated-only plan: {_money(ded)}/h; sharing saves {1 - plan['cost_per_hour'] / ded:.1%}")
    console.print()


def _mix(gpus) -> str:
    return " ".join(f"{n}x{g}" for g, n in gpus) or "-"


def sweep_table(console: Console, results) -> None:
    """`gpumix sweep`: one row a point, beside the best single GPU type."""
    t = Table(show_edge=False, pad_edge=False)
    for col, just in (("scale", "right"), ("TPOT ms", "right"), ("status", "left"), ("$/h", "right"),
                      ("GPU mix", "left"), ("best single type", "left"), ("saves", "right")):
        t.add_column(col, justify=just)
    for r in results:
        tpot = "-" if r.point.tpot_ms is None else f"{r.point.tpot_ms:g}"
        if r.cost is None:
            t.add_row(f"{r.point.scale:g}", tpot, r.status, "-", r.error, "-", "-")
            continue
        best, saves = "none serves all", "-"
        if r.best_single is not None:
            best = f"{r.best_single[0]} ${r.best_single[1]:,.2f}"
            saves = f"{1 - r.cost / r.best_single[1]:.0%}" if r.best_single[1] > 0 else "-"
        t.add_row(f"{r.point.scale:g}", tpot, r.status, f"${r.cost:,.2f}", _mix(r.gpus), best, saves)
    console.print(t)


def _ms(p: Optional[dict], key: str) -> str:
    v = (p or {}).get(key)
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def validate_report(console: Console, report: dict) -> None:
    """`gpumix validate`: one row a replica group, then skips, shared sets and the verdict."""
    t = Table(title=f"validate {report['plan']} ({report['mode']}, {report['load']['arrivals']} arrivals, "
                    f"{report['load']['duration_s']:g} s)", title_justify="left", show_edge=False, pad_edge=False)
    for col, just in (("model", "left"), ("GPU", "left"), ("TP", "right"), ("run/count", "right"),
                      ("planned req/s", "right"), ("achieved", "right"), ("TTFT p50/p99 ms", "right"),
                      ("TPOT p50/p99 ms", "right"), ("in SLO", "right"), ("result", "left")):
        t.add_column(col, justify=just)
    for g in report["groups"]:
        result = {"passed": "[green]passed[/green]", "failed": "[red]FAILED[/red]",
                  "error": "[red]ERROR[/red]", "skipped": "[dim]skipped[/dim]"}[g["status"]]
        measured = g["status"] != "skipped" and "achieved_rps" in g
        name = g["model"] + (f" (shared[{g['shared']}])" if "shared" in g else "")
        t.add_row(name, g["gpu"], str(g["tp"]), f"{g.get('replicas_run', 0)}/{g['count']}",
                  f"{g['planned_rps']:,.2f}",
                  f"{g['achieved_rps']:,.2f}" if measured else "-",
                  f"{_ms(g.get('ttft_ms'), 'p50')} / {_ms(g.get('ttft_ms'), 'p99')}" if measured else "-",
                  f"{_ms(g.get('tpot_ms'), 'p50')} / {_ms(g.get('tpot_ms'), 'p99')}" if measured else "-",
                  f"{g['slo_attainment']:.1%}" if measured else "-", result)
    console.print(t)
    for g in report["groups"]:
        if g["status"] == "skipped":
            console.print(f"skipped {g['model']} on {g['gpu']} TP{g['tp']}: {g['reasons'][0]}", markup=False)
    for s in report.get("shared", []):
        console.print(f"shared[{s['index']}] ({' + '.join(s['models'])}) on {s['gpu']} TP{s['tp']}: "
                      f"{s['status']}, planned time use {s['planned_utilization']} per set"
                      + (f", plan memory {s['memory_gb_per_gpu']} GB per GPU" if s.get("memory_gb_per_gpu") else ""),
                      markup=False)
    verdict = "[green]PASSED[/green]" if report["passed"] else "[red]FAILED[/red]"
    console.print(f"{verdict}: {report['validated']} group(s) validated, {report['skipped']} skipped")


def profile_summary(console: Console, runs, calibration: dict | None, out_path, calibrate_to) -> None:
    """One line per profiled (model, TP), the calibration if any, and where the entries went."""
    for r in runs:
        h = r.heldout
        err_txt = f"held-out error median {h['median']:.1%} p90 {h['p90']:.1%}" if h["points"] else ""
        served = sum(1 for e in r.entries if e["max_rps"] > 0)
        console.print(f"{r.model} TP{r.tp} on {r.gpu}: {len(r.samples)} points, {err_txt}; "
                      f"{served}/{len(r.entries)} buckets meet the SLO", markup=False)
    if calibration is not None:
        console.print(f"calibration {calibration['gpu']}: roofline median error "
                      f"{calibration['median_error_before']:.0%} -> {calibration['median_error_after']:.0%}"
                      f"; fitted {', '.join(calibration.get('fitted', ())) or 'nothing'}"
                      + (f", written to {calibrate_to}" if calibrate_to else ""), markup=False, soft_wrap=True)
    console.print(f"{sum(len(r.entries) for r in runs)} entries written to {out_path}", markup=False)
