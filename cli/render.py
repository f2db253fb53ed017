"""Rich tables for people. Machine output (JSON) never goes through here."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

COMPACT_ABOVE = 12  # models: one table per model up to this, one table in all beyond


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _group_rows(table: Table, groups: list[dict], with_model: bool) -> None:
    for g in groups:
        rps = sum(r["rps"] for r in g["routes"])
        srcs = sorted({r["source"] for r in g["routes"]})
        row = [g["gpu"], str(g["tp"]), str(g["count"]), f"{rps:,.2f}", f"{g['utilization']:.0%}",
               _money(g["cost_per_hour"]), "/".join(srcs)]
        table.add_row(*([g["model"]] if with_model else []), *row)


def _group_table(title: str | None, with_model: bool) -> Table:
    t = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    if with_model:
        t.add_column("model", no_wrap=True)
    t.add_column("GPU")
    t.add_column("TP", justify="right")
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
    if len(plan["models"]) <= COMPACT_ABOVE:
        for m in plan["models"]:
            if m.get("shared") and not groups_by_model.get(m["name"]):
                continue  # in the shared table below
            t = _group_table(f"{m['name']}: {m['rate_rps']:,.2f} req/s, {m['gpus']} GPUs, "
                             f"{_money(m['cost_per_hour'])}/h", with_model=False)
            _group_rows(t, groups_by_model.get(m["name"], []), with_model=False)
            console.print(t)
            console.print()
    else:
        t = _group_table(None, with_model=True)
        _group_rows(t, plan["replicas"], with_model=True)
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


def catalog(console: Console, cat, what: str) -> None:
    if what == "gpus":
        t = Table(show_edge=False, pad_edge=False)
        for col in ("GPU", "mem GB", "HBM GB/s", "BF16 TFLOPS", "link GB/s", "GPUs/node", "$/GPU-h", "spot $/GPU-h"):
            t.add_column(col, justify="left" if col == "GPU" else "right", no_wrap=col == "GPU")
        for g in cat.gpus.values():
            t.add_row(g.name, f"{g.memory_gb:g}", f"{g.memory_bandwidth_gbps:g}", f"{g.bf16_tflops:g}",
                      f"{g.interconnect_gbps:g}", str(g.gpus_per_node),
                      "-" if g.price_per_hour is None else f"{g.price_per_hour:.3f}",
                      "-" if g.spot_price_per_hour is None else f"{g.spot_price_per_hour:.3f}")
    else:
        t = Table(show_edge=False, pad_edge=False)
        for col in ("model", "params B", "layers", "hidden", "heads", "kv heads", "head dim", "experts"):
            t.add_column(col, justify="left" if col == "model" else "right", no_wrap=col == "model")
        for name, s in cat.models.items():
            t.add_row(name, f"{s.params / 1e9:.2f}", str(s.num_layers), str(s.hidden_size), str(s.num_heads),
                      str(s.num_kv_heads), str(s.head_dim),
                      f"{s.experts_per_token}/{s.num_experts}" if s.num_experts > 1 else "-")
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
