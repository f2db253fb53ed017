"""Rich tables and report lines for people. Machine output (JSON) never goes through here.

Every name here comes from a user's file, so nothing is parsed as rich markup: cells and titles are
Text objects (`_row`, `_t`), lines are printed through `_say` (markup off), and control characters
are replaced (common.clean): a model named `[/]` or `[bold]x` prints as itself.
"""
from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gpumix.cli.common import clean

COMPACT_ABOVE = 12  # models: one table per model up to this, one table in all beyond


def _t(x, style: str = "") -> Text:
    return x if isinstance(x, Text) else Text(clean(x), style=style)


def _row(table: Table, *cells, **kw) -> None:
    table.add_row(*(_t(c) for c in cells), **kw)


def _say(console: Console, text: str, **kw) -> None:
    console.print(clean(text), markup=False, **kw)


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
        _row(table, *([g["model"]] if with_model else []), *row)


def _group_table(title: str | None, with_model: bool, with_precision: bool = False) -> Table:
    t = Table(title=None if title is None else _t(title), title_justify="left", show_edge=False, pad_edge=False)
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


def _heading(m: dict) -> str:
    """'m: 12.00 req/s, 3 GPUs, $9.00/h'; a partial plan's model says what is served of its demand."""
    frac = m.get("served_fraction")
    rate = f"{m['rate_rps']:,.2f} req/s"
    if frac is not None and frac < 1 - 1e-9:
        rate = f"{m['rate_rps'] * frac:,.2f} of {m['rate_rps']:,.2f} req/s served ({frac:.1%})"
    return f"{m['name']}: {rate}, {m['gpus']} GPUs, {_money(m['cost_per_hour'])}/h"


def plan_report(console: Console, result) -> None:
    plan = result.plan
    if plan.get("periods") is not None:
        schedule_report(console, result)
        return
    groups_by_model: dict[str, list[dict]] = {}
    for g in plan["replicas"]:
        groups_by_model.setdefault(g["model"], []).append(g)
    quantized = _quantized(plan["replicas"])
    if len(plan["models"]) <= COMPACT_ABOVE:
        for m in plan["models"]:
            if m.get("shared") and not groups_by_model.get(m["name"]):
                continue  # in the shared table below
            _say(console, _heading(m), style="table.title")  # a line, not a title: never wrapped to the table
            t = _group_table(None, with_model=False, with_precision=quantized)
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
    if plan.get("nodes") is not None:
        _node_gpus(console, plan)
        nodes(console, plan)
    else:
        _gpus(console, plan)
    _price_sources(console, plan)
    if plan.get("partial"):
        _say(console, "partial plan: " + ", ".join(f"{m['name']} {m.get('served_fraction', 1.0):.1%}"
                                                   for m in plan["models"]) + " of demand served")
    if plan.get("changes") is not None:
        changes(console, plan)
    _status(console, plan)
    _say(console, f"solved in {result.wall_s:.2f}s ({result.solution.method})", style="dim")
    if plan.get("baseline") is not None:
        base = plan["baseline"]["best_single_gpu"]
        if base:
            _say(console, f"best single GPU type: {base['gpu']} at {_money(base['cost_per_hour'])}/h; "
                          f"this plan saves {base['savings']:.1%}")
        else:
            _say(console, "best single GPU type: none can serve every model alone")


def _price_sources(console: Console, plan: dict) -> None:
    """One dim line: where the prices come from (gpus[].price_source, in full in the plan JSON)."""
    by: dict[str, list[str]] = {}
    for g in plan["gpus"]:
        src = g.get("price_source")
        if src:
            kind = src.split(":", 1)[0]
            by.setdefault(kind, []).append(g["name"])
    if by:
        _say(console, "prices: " + "; ".join(f"{', '.join(names)} from the {kind}" for kind, names in by.items())
             + " (gpus[].price_source in the plan JSON)", style="dim")


def _gpus(console: Console, plan: dict) -> None:
    """Loose GPUs: each type's count at its $/GPU-hour; the rows add up to the plan's cost."""
    gt = Table(title="GPUs", title_justify="left", show_edge=False, pad_edge=False)
    for col, just in (("GPU", "left"), ("used", "right"), ("available", "right"),
                      ("$/GPU-h", "right"), ("$/h", "right")):
        gt.add_column(col, justify=just)
    for g in plan["gpus"]:
        avail = "unlimited" if g["available"] is None else str(g["available"])
        _row(gt, g["name"], str(g["used"]), avail, _money(g["price_per_gpu_hour"]), _money(g["cost_per_hour"]))
    console.print(gt)
    console.print()


def _node_gpus(console: Console, plan: dict) -> None:
    """Instance plans: the cost is the sum of node prices, so each GPU type's row shows the GPUs its
    nodes rent and what those nodes cost; the rows add up to the plan's cost. Group and model costs
    above are at the cheapest $/GPU-hour (the plan's price_basis), which a node can exceed."""
    rented: dict[str, list[float]] = {}  # gpu -> [GPUs on nodes, node $/h]
    for nd in plan["nodes"]:
        acc = rented.setdefault(nd["gpu"], [0, 0.0])
        acc[0] += nd["gpus"]
        acc[1] += nd["price_per_hour"]
    gt = Table(title="GPUs (on nodes)", title_justify="left", show_edge=False, pad_edge=False)
    for col, just in (("GPU", "left"), ("used", "right"), ("rented", "right"), ("available", "right"),
                      ("$/GPU-h", "right"), ("nodes $/h", "right")):
        gt.add_column(col, justify=just)
    names = [g["name"] for g in plan["gpus"]] + sorted(set(rented) - {g["name"] for g in plan["gpus"]})
    by_name = {g["name"]: g for g in plan["gpus"]}
    for name in names:
        g = by_name.get(name, {"used": 0, "available": None})
        n, cost = rented.get(name, (0, 0.0))
        avail = "unlimited" if g["available"] is None else str(g["available"])
        _row(gt, name, str(g["used"]), str(n), avail, _money(cost / n) if n else "-", _money(cost))
    total = sum(c for _, c in rented.values())
    gt.add_section()
    _row(gt, "total", "", str(sum(n for n, _ in rented.values())), "", "", _money(total))
    console.print(gt)
    at_cheapest = sum(g["cost_per_hour"] for g in plan["gpus"])
    if abs(at_cheapest - total) > 0.005:
        _say(console, f"the cost is the node prices ({_money(total)}/h); the group and model costs above price "
                      f"the GPUs used at the cheapest $/GPU-h ({_money(at_cheapest)}/h)", style="dim")
    console.print()


def _status(console: Console, plan: dict) -> None:
    """The last line: cost, status, bound and gap. A --current plan minimizes cost + churn, so its
    status and gap are those of that objective; the cost's own bound follows."""
    line = (f"cost {_money(plan['cost_per_hour'])}/h, {plan['status']}: lower bound "
            f"{_money(plan['lower_bound_per_hour'])}/h, gap {plan['gap']:.3%}")
    churn = plan.get("churn") or {}
    obj, obj_bound = churn.get("objective_per_hour"), churn.get("objective_lower_bound")
    if obj is None or obj_bound is None:
        _say(console, line)
        return
    gap = max(0.0, (obj - obj_bound) / obj) if obj > 0 else 0.0
    tol = float((plan.get("solver") or {}).get("mip_gap") or 1e-4)
    verdict = "optimal" if gap <= tol + 1e-9 else "feasible"
    _say(console, f"cost {_money(plan['cost_per_hour'])}/h; cost + churn {_money(obj)}/h (the objective), "
                  f"{verdict}: lower bound {_money(obj_bound)}/h, gap {gap:.3%}")
    _say(console, f"without churn no plan costs less than {_money(plan['lower_bound_per_hour'])}/h "
                  f"(gap of the cost alone {plan['gap']:.3%})", style="dim")


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
            _row(t, g.name, f"{g.memory_gb:g}", f"{g.memory_bandwidth_gbps:g}", f"{g.bf16_tflops:g}",
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
            _row(t, name, f"{s.params / 1e9:.1f}", f"{s.active_params / 1e9:.1f}", str(s.num_layers),
                      _attention(s), f"{s.sliding_window} x{s.sliding_layers}" if s.sliding_window else "-",
                      f"{s.experts_per_token}/{s.num_experts}" if s.is_moe else "-",
                      f"{s.kv_bytes_per_token(1) / 1024:.0f}")  # TP 1, BF16, every layer full
    console.print(t)


def _ids(ids) -> str:
    """[0, 1, 2, 3, 6] -> '0-3,6'."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _layout(nd: dict) -> str:
    """'llama-3.1-70b TP4: 0-3 4-7; shared set #0 TP1: 0': each (model, TP) once, its groups' GPU ids."""
    parts: dict[str, list[str]] = {}  # 'model TPn' -> GPU ids of each of its groups, in node order
    for r in nd["replicas"]:
        parts.setdefault(f"{r['model']} TP{r['tp']}", []).append(_ids(r["gpu_ids"]))
    for r in nd.get("shared") or ():
        parts.setdefault(f"shared set #{r['group']} TP{r['tp']}", []).append(_ids(r["gpu_ids"]))
    return "; ".join(f"{k}: {' '.join(v)}" for k, v in parts.items())


def nodes(console: Console, plan: dict) -> None:
    """One row per kind of node: identical nodes (instance, region, spot, price, same replicas on
    the same GPU ids) are one row with their count, in the plan's order of first appearance."""
    kinds: dict[tuple, list] = {}  # (instance, region, spot, gpus, gpu, price, layout) -> [count]
    for nd in plan["nodes"]:
        key = (nd["instance"], nd["region"], bool(nd.get("spot")), nd["gpus"], nd["gpu"], nd["price_per_hour"],
               _layout(nd))
        kinds.setdefault(key, [0])[0] += 1
    t = Table(title=f"Nodes ({len(plan['nodes'])})", title_justify="left", show_edge=False, pad_edge=False)
    for col, just in (("nodes", "right"), ("instance", "left"), ("region", "left"), ("GPUs", "right"),
                      ("$/h each", "right"), ("replicas: GPU ids", "left")):
        t.add_column(col, justify=just)
    for (instance, region, spot, gpus, gpu, price, layout), (n,) in kinds.items():
        _row(t, str(n), instance + (" (spot)" if spot else ""), region, f"{gpus} x {gpu}", _money(price), layout)
    console.print(t)
    console.print()


def changes(console: Console, plan: dict) -> None:
    ch = plan["changes"]
    for verb in ("start", "stop", "keep"):
        rows = ch.get(verb, [])
        n = sum(r.get("count", 1) for r in rows)
        _say(console, f"{verb} {n} replica{'s' if n != 1 else ''}", style="bold")
        for r in rows:
            node = "" if r.get("node") is None else f" {r['node']}"
            where = f" on node{node} {r['instance']}" if r.get("instance") else ""
            count = f"{r['count']} x " if "count" in r else ""
            _say(console, f"  {count}{r['model']} {r['gpu']} TP{r['tp']}{' spot' if r.get('spot') else ''}{where}")
    churn = plan.get("churn") or {}
    if churn:
        _say(console, f"churn: {churn['replicas_started']} started at {_money(churn['cost_per_replica_started'])}"
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
            _row(t, *head, e["model"], f"{sum(r['rps'] for r in e['routes']):,.2f}", f"{e['time_fraction']:.0%}",
                 f"{e['memory_gb_per_gpu']:.1f}")
        _row(t, "", "", "", "", "", "(set total)", "", f"{g['utilization']:.0%}",
             f"{g['memory_gb_per_gpu']:.1f}/{g['memory_budget_gb_per_gpu']:.1f}", end_section=True)
    console.print(t)
    ded = (plan.get("solver") or {}).get("dedicated_only_cost_per_hour")
    if ded:
        _say(console, f"dedicated-only plan: {_money(ded)}/h; sharing saves {1 - plan['cost_per_hour'] / ded:.1%}")
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
            _row(t, f"{r.point.scale:g}", tpot, r.status, "-", r.error, "-", "-")
            continue
        best, saves = "none serves all", "-"
        if r.best_single is not None:
            best = f"{r.best_single[0]} ${r.best_single[1]:,.2f}"
            saves = f"{1 - r.cost / r.best_single[1]:.0%}" if r.best_single[1] > 0 else "-"
        _row(t, f"{r.point.scale:g}", tpot, r.status, f"${r.cost:,.2f}", _mix(r.gpus), best, saves)
    console.print(t)


def _ms(p: Optional[dict], key: str) -> str:
    v = (p or {}).get(key)
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


_RESULT = {"passed": ("passed", "green"), "failed": ("FAILED", "red"), "error": ("ERROR", "red"),
           "skipped": ("skipped", "dim")}


def validate_report(console: Console, report: dict) -> None:
    """`gpumix validate`: one row a replica group, then skips, shared sets and the verdict. The
    group (model over GPU, TP and replicas run) takes two lines, so seven columns fit 80."""
    t = Table(title=_t(f"validate {report['plan']} ({report['mode']}, {report['load']['arrivals']} arrivals, "
                       f"{report['load']['duration_s']:g} s)"), title_justify="left", show_edge=False, pad_edge=False,
              caption=_t("xR/N: replicas run of the N planned; req/s planned, got: achieved; "
                         "TTFT, TPOT: p50/p99 ms"), caption_justify="left")
    t.add_column("group", overflow="fold", min_width=14, ratio=1)
    for col in ("req/s", "got", "TTFT", "TPOT", "in SLO"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("result", no_wrap=True)
    for g in report["groups"]:
        word, style = _RESULT[g["status"]]
        measured = g["status"] != "skipped" and "achieved_rps" in g
        name = g["model"] + (f" (shared[{g['shared']}])" if "shared" in g else "")
        group = Text.assemble(_t(name), "\n", _t(f"{g['gpu']} TP{g['tp']} x{g.get('replicas_run', 0)}/{g['count']}",
                                                  style="dim"))
        _row(t, group, f"{g['planned_rps']:,.2f}",
             f"{g['achieved_rps']:,.2f}" if measured else "-",
             f"{_ms(g.get('ttft_ms'), 'p50')}/{_ms(g.get('ttft_ms'), 'p99')}" if measured else "-",
             f"{_ms(g.get('tpot_ms'), 'p50')}/{_ms(g.get('tpot_ms'), 'p99')}" if measured else "-",
             f"{g['slo_attainment']:.1%}" if measured else "-", Text(word, style=style))
    console.print(t)
    for g in report["groups"]:
        if g["status"] == "skipped":
            _say(console, f"skipped {g['model']} on {g['gpu']} TP{g['tp']}: {g['reasons'][0]}")
    for s in report.get("shared", []):
        _say(console, f"shared[{s['index']}] ({' + '.join(s['models'])}) on {s['gpu']} TP{s['tp']}: "
                      f"{s['status']}, planned time use {s['planned_utilization']} per set"
                      + (f", plan memory {s['memory_gb_per_gpu']} GB per GPU" if s.get("memory_gb_per_gpu") else ""))
    verdict = Text("PASSED", style="green") if report["passed"] else Text("FAILED", style="red")
    console.print(Text.assemble(verdict, f": {report['validated']} group(s) validated, {report['skipped']} skipped"))


def profile_summary(console: Console, runs, calibration: dict | None, out_path, calibrate_to) -> None:
    """One line per profiled (model, TP), the calibration if any, and where the entries went."""
    for r in runs:
        h = r.heldout
        err_txt = f"held-out error median {h['median']:.1%} p90 {h['p90']:.1%}" if h["points"] else ""
        served = sum(1 for e in r.entries if e["max_rps"] > 0)
        _say(console, f"{r.model} TP{r.tp} on {r.gpu}: {len(r.samples)} points, {err_txt}; "
                      f"{served}/{len(r.entries)} buckets meet the SLO")
    if calibration is not None:
        _say(console, f"calibration {calibration['gpu']}: roofline median error "
                      f"{calibration['median_error_before']:.0%} -> {calibration['median_error_after']:.0%}"
                      f"; fitted {', '.join(calibration.get('fitted', ())) or 'nothing'}"
                      + (f", written to {calibrate_to}" if calibrate_to else ""), soft_wrap=True)
    _say(console, f"{sum(len(r.entries) for r in runs)} entries written to {out_path}")


def period_start(t: int, hours: float) -> str:
    """'06:00' (or 'd2 06:00' past the first day) for the start of period t, counted from 00:00."""
    minutes = round(t * hours * 60)
    day, rest = divmod(minutes, 24 * 60)
    return (f"d{day + 1} " if day else "") + f"{rest // 60:02d}:{rest % 60:02d}"


MAX_PERIOD_ROWS = 168  # a week of hours; longer schedules show their ends and the peak period


def _shown_periods(n: int, peak: int) -> set[int]:
    if n <= MAX_PERIOD_ROWS:
        return set(range(n))
    return set(range(24)) | set(range(n - 24, n)) | {peak}


def schedule_report(console: Console, result) -> None:
    """A plan with periods: one row a period (GPUs per type, starts, $/h, $), then the three totals
    and the savings against the peak-sized static plan (docs/schedule.md)."""
    plan = result.plan
    horizon, periods = plan["horizon"], plan["periods"]
    types = sorted({g for e in periods for g in e["gpus"]})
    t = Table(title=_t(f"Schedule: {horizon['periods']} periods of {horizon['period_hours']:g} h "
                       f"({'cyclic' if horizon['cyclic'] else 'from an empty fleet'}, {horizon['timezone']})"),
              title_justify="left", show_edge=False, pad_edge=False)
    t.add_column("period", justify="right")
    t.add_column("start")
    for g in types:
        t.add_column(g, justify="right")
    for col in ("replicas", "starts", "$/h", "$"):
        t.add_column(col, justify="right")
    shown = _shown_periods(len(periods), horizon["peak_period"])
    for i, e in enumerate(periods):
        if i not in shown:
            if i - 1 in shown:
                _row(t, "...", *[""] * (len(t.columns) - 1), style="dim")
            continue
        row = [str(e["index"]), period_start(e["index"], horizon["period_hours"])]
        row += [str(e["gpus"][g]) if e["gpus"].get(g) else "-" for g in types]
        row += [str(sum(g["count"] for g in e["replicas"])), str(e["starts"]), _money(e["cost_per_hour"]),
                _money(e["hours"] * e["cost_per_hour"] + e["start_cost"])]
        _row(t, *row, style="bold" if e["index"] == horizon["peak_period"] else None)
    console.print(t)
    if len(shown) < len(periods):
        _say(console, f"{len(periods) - len(shown)} of {len(periods)} periods not shown (every period is in the "
                      "plan JSON: --out)", style="dim")
    console.print()
    _price_sources(console, plan)
    starts = sum(e["start_cost"] for e in periods)
    _say(console, f"schedule {_money(plan['total_cost'])} over {horizon['hours']:g} h (starts {_money(starts)}), "
                  f"{plan['status']}: lower bound {_money(plan['lower_bound_total'])}, gap {plan['gap']:.3%}")
    base = plan.get("baseline") or {}
    per = (base.get("per_period") or {}).get("total_cost")
    if per is not None:
        _say(console, f"per-period optima (start costs ignored): {_money(per)}")
    peak = base.get("peak_static")
    if peak:
        _say(console, f"peak-sized static plan: {_money(peak['total_cost'])} ({_money(peak['cost_per_hour'])}/h); "
                      f"the schedule saves {peak['savings']:.1%}")
    elif "peak_static" in base:
        _say(console, "peak-sized static plan: none fits the smallest availability of every period")
    _say(console, f"peak period {horizon['peak_period']} ({_money(plan['cost_per_hour'])}/h) is the plan's "
                  f"top-level replicas; start costs: {horizon['start_cost']}", style="dim")
    _say(console, f"solved in {result.wall_s:.2f}s ({result.solution.method})", style="dim")
