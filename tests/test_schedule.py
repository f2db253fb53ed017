"""Plans for demand that moves (docs/schedule.md): start accounting against brute force, cyclic
horizons, availability lists, the checker on tampered schedules, refusals."""
from __future__ import annotations

import copy
import itertools
import json

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.planner.checker import check_periods
from gpumix.planner.catalog import load_catalog
from gpumix.planner.schedule import build_schedule
from gpumix.solvers.pipeline import PlanOptions, load_problem, plan_workload

runner = CliRunner()
U = 0.8
# one model, one bucket; A: 2 req/s for $1/h, B: 5 req/s for $2/h
MU = {"A": 2.0, "B": 5.0}
PRICE = {"A": 1.0, "B": 2.0}


def tiny(tmp_path, rates, *, cyclic=True, start_cost=3.0, available=None, extra=None):
    gpus = [{"name": g, "price_per_hour": p} for g, p in PRICE.items()]
    for g in gpus:
        if available and g["name"] in available:
            g["available"] = available[g["name"]]
    wl = {"max_utilization": U, "tp_degrees": [1], "cyclic": cyclic, "start_cost_per_replica": start_cost,
          "models": [{"name": "m", "rate_rps": rates, "slo": {"ttft_ms": 1000, "tpot_ms": 100},
                      "buckets": [{"input_tokens": 100, "output_tokens": 10, "share": 1.0}]}],
          "gpus": gpus, **(extra or {})}
    prof = {"entries": [{"model": "m", "gpu": g, "tp": 1, "input_tokens": 100, "output_tokens": 10, "max_rps": mu}
                        for g, mu in MU.items()]}
    w, p = tmp_path / "wl.json", tmp_path / "prof.json"
    w.write_text(json.dumps(wl))
    p.write_text(json.dumps(prof))
    return w, p


def brute(rates, cyclic, sigma, available=None):
    """The cheapest schedule by enumeration: replicas of A and B per period (0..4 each), written
    independently of planner/schedule.py."""
    states = []
    for t, r in enumerate(rates):
        ok = []
        for a, b in itertools.product(range(5), repeat=2):
            avail = (available or {}).get("A")
            if avail is not None and a > (avail[t] if isinstance(avail, list) else avail):
                continue
            if a * U * MU["A"] + b * U * MU["B"] >= r - 1e-9:
                ok.append((a, b))
        states.append(ok)
    best = None
    for path in itertools.product(*states):
        hours = sum(a * PRICE["A"] + b * PRICE["B"] for a, b in path)
        starts = 0
        for t, (a, b) in enumerate(path):
            pa, pb = path[t - 1] if (t > 0 or cyclic) else (0, 0)
            starts += max(0, a - pa) + max(0, b - pb)
        total = hours + sigma * starts
        best = total if best is None else min(best, total)
    return best


@pytest.mark.parametrize("cyclic", [True, False])
@pytest.mark.parametrize("rates,sigma", [([1.0, 6.0, 2.5], 3.0), ([3.0, 0.5, 7.0, 1.5], 0.4), ([4.0, 4.0, 1.0], 10.0)])
def test_schedule_matches_brute_force(tmp_path, rates, sigma, cyclic):
    w, p = tiny(tmp_path, rates, cyclic=cyclic, start_cost=sigma)
    res = plan_workload(w, p, PlanOptions(time_limit=60))
    plan = res.plan
    want = brute(rates, cyclic, sigma)
    assert plan["total_cost"] == pytest.approx(want, abs=1e-6)
    assert plan["lower_bound_total"] <= want + 1e-6
    # starts recomputed here from the periods' groups (with the wrap when cyclic)
    counts = [{g["gpu"]: g["count"] for g in e["replicas"]} for e in plan["periods"]]
    starts = [sum(max(0, n - (counts[t - 1] if t or cyclic else {}).get(g, 0)) for g, n in c.items())
              for t, c in enumerate(counts)]
    assert [e["starts"] for e in plan["periods"]] == starts
    assert plan["total_cost"] == pytest.approx(sum(e["cost_per_hour"] for e in plan["periods"]) + sigma * sum(starts))


def test_cyclic_off_starts_from_an_empty_fleet(tmp_path):
    rates = [3.0, 3.0, 3.0]
    on = plan_workload(*tiny(tmp_path, rates, cyclic=True), PlanOptions(time_limit=30)).plan
    off = plan_workload(*tiny(tmp_path, rates, cyclic=False), PlanOptions(time_limit=30)).plan
    assert sum(e["starts"] for e in on["periods"]) == 0  # the same fleet all day, round midnight too
    first = sum(g["count"] for g in off["periods"][0]["replicas"])
    assert off["periods"][0]["starts"] == first >= 1
    assert off["total_cost"] == pytest.approx(on["total_cost"] + 3.0 * first)
    assert off["horizon"]["cyclic"] is False


def test_availability_lists_bind_per_period(tmp_path):
    rates = [1.5, 1.5, 1.5]
    avail = {"A": [1, 0, 1]}
    w, p = tiny(tmp_path, rates, start_cost=0.0, available=avail)
    plan = plan_workload(w, p, PlanOptions(time_limit=30)).plan
    used = [e["gpus"].get("A", 0) for e in plan["periods"]]
    assert used[1] == 0 and all(u <= a for u, a in zip(used, avail["A"]))
    assert plan["total_cost"] == pytest.approx(brute(rates, True, 0.0, avail))
    # the static baseline sees the smallest availability of each type
    assert plan["baseline"]["peak_static"]["cost_per_hour"] == pytest.approx(2.0)


def _schedule(tmp_path, w, p):
    wl, problem, _ = load_problem(w, p)
    return build_schedule(wl, problem, load_catalog())


def test_checker_rejects_tampered_schedules(tmp_path):
    w, p = tiny(tmp_path, [1.0, 6.0, 2.5])
    plan = plan_workload(w, p, PlanOptions(time_limit=30)).plan
    schedule = _schedule(tmp_path, w, p)
    assert check_periods(plan, schedule) == []

    def bad(edit):
        doc = copy.deepcopy(plan)
        edit(doc)
        return check_periods(doc, schedule)

    assert any(f.code == "cost" and "starts" in f.where for f in bad(lambda d: d["periods"][1].update(starts=0)))
    assert any(f.code == "cost" and f.where == "total_cost" for f in bad(lambda d: d.update(total_cost=1.0)))
    assert any(f.code == "C1" for f in bad(lambda d: d["periods"][1]["replicas"][0]["routes"][0].update(rps=0.1)))
    assert any(f.code == "bound" for f in bad(lambda d: d.update(lower_bound_total=1e6)))
    assert any(f.where == "replicas" for f in bad(lambda d: d.update(replicas=d["periods"][0]["replicas"])
                                                  if d["horizon"]["peak_period"] != 0 else d["periods"][0].update(index=5)))
    assert any(f.code == "schema" for f in bad(lambda d: d["periods"].pop()))
    # a changed count changes both the period's cost and its starts
    found = bad(lambda d: d["periods"][2]["replicas"][0].update(count=d["periods"][2]["replicas"][0]["count"] + 1))
    assert any(f.code == "cost" for f in found)


def test_check_command_on_a_schedule(tmp_path):
    w, p = tiny(tmp_path, [1.0, 6.0, 2.5])
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["plan", str(w), "--profiles", str(p), "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["check", str(out), str(w), "--profiles", str(p)]).exit_code == 0
    doc = json.loads(out.read_text())
    doc["periods"][0]["starts"] += 1
    out.write_text(json.dumps(doc))
    r = runner.invoke(app, ["check", str(out), str(w), "--profiles", str(p)])
    assert r.exit_code == 1 and "starts" in r.output


def test_trace_is_resampled_to_the_peak_within_each_period(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("time,model,rate_rps\n0,m,1.0\n0.5,m,3.0\n1.2,m,2.0\n2.0,m,0.5\n2.9,m,0.6\n")
    w, p = tiny(tmp_path, None, extra={"trace": "t.csv"})
    doc = json.loads(w.read_text())
    del doc["models"][0]["rate_rps"]
    w.write_text(json.dumps(doc))
    wl, _, _ = load_problem(w, p)
    # period 0: 1.0 then 3.0; period 1: 3.0 holds until 1.2, then 2.0; period 2: 0.5, 0.6
    assert wl.models[0].rates == (3.0, 3.0, 0.6)
    assert wl.periods.count == 3 and wl.periods.trace.endswith("t.csv")


BAD = [
    ("lists of different lengths", lambda d: d["gpus"][0].update(available=[1, 2])),
    ("negative rate", lambda d: d["models"][0].update(rate_rps=[1.0, -1.0, 2.0])),
    ("rate not a number", lambda d: d["models"][0].update(rate_rps=[1.0, "x", 2.0])),
    ("all rates zero", lambda d: d["models"][0].update(rate_rps=[0, 0, 0])),
    ("cyclic not a bool", lambda d: d.update(cyclic="yes")),
    ("unknown time zone", lambda d: d.update(timezone="Mars/Olympus")),
    ("period keys without periods", lambda d: (d["models"][0].update(rate_rps=2.0), d.pop("cyclic"))),
]


@pytest.mark.parametrize("name,edit", BAD, ids=[b[0] for b in BAD])
def test_bad_period_input_is_one_line_exit_2_nothing_written(tmp_path, name, edit):
    w, p = tiny(tmp_path, [1.0, 2.0, 3.0])
    doc = json.loads(w.read_text())
    edit(doc)
    w.write_text(json.dumps(doc))
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["plan", str(w), "--profiles", str(p), "--out", str(out), "-q"])
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and "wl.json" in r.output
    assert not out.exists()


TRACES = [
    ("empty", "time,model,rate_rps\n"),
    ("no header", ""),
    ("wrong header", "t,model,rate\n0,m,1\n"),
    ("malformed row", "time,model,rate_rps\n0,m\n"),
    ("unknown model", "time,model,rate_rps\n0,other,1\n"),
    ("NaN rate", "time,model,rate_rps\n0,m,nan\n"),
    ("negative rate", "time,model,rate_rps\n0,m,-2\n"),
    ("bad time", "time,model,rate_rps\nnoon,m,2\n"),
    ("duplicate row", "time,model,rate_rps\n0,m,2\n0,m,3\n"),
]


@pytest.mark.parametrize("name,text", TRACES, ids=[t[0] for t in TRACES])
def test_bad_trace_is_one_line_exit_2(tmp_path, name, text):
    (tmp_path / "t.csv").write_text(text)
    w, p = tiny(tmp_path, None, extra={"trace": "t.csv"})
    doc = json.loads(w.read_text())
    del doc["models"][0]["rate_rps"]
    w.write_text(json.dumps(doc))
    out = tmp_path / "plan.json"
    r = runner.invoke(app, ["plan", str(w), "--profiles", str(p), "--out", str(out), "-q"])
    assert r.exit_code == 2, r.output
    assert r.output.count("\n") == 1 and "t.csv" in r.output
    assert not out.exists()


def test_options_that_do_not_compose_exit_2(tmp_path):
    w, p = tiny(tmp_path, [1.0, 2.0, 3.0])
    for extra in (["--share-gpus"], ["--spare-nodes", "1"], ["--whole-buckets"]):
        r = runner.invoke(app, ["plan", str(w), "--profiles", str(p), "-q", *extra])
        assert r.exit_code == 2 and "period" in r.output, (extra, r.output)
    doc = json.loads(w.read_text())
    doc["instances"] = [{"name": "box", "gpu": "A", "gpus": 1, "price_per_hour": 1.0}]
    w.write_text(json.dumps(doc))
    r = runner.invoke(app, ["plan", str(w), "--profiles", str(p), "-q"])
    assert r.exit_code == 2 and "instances" in r.output


def test_single_period_options_refused(tmp_path):
    r = runner.invoke(app, ["plan", "-q", "--start-cost", "1"])
    assert r.exit_code == 2 and "--start-cost" in r.output
    r = runner.invoke(app, ["plan", "-q", "--plot", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "--plot" in r.output and not (tmp_path / "x.png").exists()


def test_default_start_cost_is_the_weights_load_time(tmp_path):
    from gpumix.planner.schedule import LOAD_GBPS
    from gpumix.planner.roofline import Efficiency, weight_bytes

    doc = {"models": [{"name": "llama-3.1-8b", "rate_rps": [1, 2], "slo": {"ttft_ms": 2000, "tpot_ms": 100},
                       "buckets": [{"input_tokens": 256, "output_tokens": 64, "share": 1}]}],
           "gpus": [{"name": "L40S", "price_per_hour": 2.0}], "tp_degrees": [1]}
    w = tmp_path / "w.json"
    w.write_text(json.dumps(doc))
    wl, problem, _ = load_problem(w, None)
    cat = load_catalog()
    s = build_schedule(wl, problem, cat)
    c = problem.configs[0]
    seconds = weight_bytes(cat.model("llama-3.1-8b"), 1, Efficiency.from_dict(cat.gpu_efficiency("L40S"))) \
        / (LOAD_GBPS * 1e9)
    assert s.start_cost[c] == pytest.approx(2.0 * seconds / 3600)
    assert 40 < seconds < 60  # 16 GB at 0.33 GB/s
    assert build_schedule(wl, problem, cat, start_cost=7.0).start_cost[c] == 7.0


def test_coupled_periods_against_brute_force(tmp_path):
    """Two models compete for GPU type A, scarce in period 1: stage 1 plans that period for both."""
    rates = {"m": [3.0, 3.0], "n": [1.5, 2.5]}
    avail_a = [4, 1]
    sigma = 0.5
    w, p = tiny(tmp_path, rates["m"], start_cost=sigma, available={"A": avail_a})
    doc = json.loads(w.read_text())
    doc["models"].append({**doc["models"][0], "name": "n", "rate_rps": rates["n"]})
    w.write_text(json.dumps(doc))
    prof = json.loads(p.read_text())
    prof["entries"] += [{**e, "model": "n"} for e in prof["entries"]]
    p.write_text(json.dumps(prof))
    plan = plan_workload(w, p, PlanOptions(time_limit=60)).plan
    assert check_periods(plan, _schedule(tmp_path, w, p)) == []
    # brute force over (m on A, m on B, n on A, n on B) per period, cyclic
    states = []
    for t in range(2):
        ok = []
        for ma, mb, na, nb in itertools.product(range(4), repeat=4):
            if ma + na > avail_a[t]:
                continue
            if all(a * U * MU["A"] + b * U * MU["B"] >= rates[x][t] - 1e-9 for x, a, b in (("m", ma, mb), ("n", na, nb))):
                ok.append((ma, mb, na, nb))
        states.append(ok)
    best = min(sum(PRICE["A"] * (s[0] + s[2]) + PRICE["B"] * (s[1] + s[3]) for s in path)
               + sigma * sum(max(0, path[t][i] - path[t - 1][i]) for t in range(2) for i in range(4))
               for path in itertools.product(*states))
    assert plan["lower_bound_total"] <= best + 1e-6 <= plan["total_cost"] + 2e-6
    assert plan["total_cost"] <= best * 1.05  # close to the optimum; the bound proves how close
    assert plan["periods"][1]["gpus"].get("A", 0) <= 1


def test_check_refuses_a_schedule_against_a_workload_without_periods(tmp_path):
    w, p = tiny(tmp_path, [1.0, 6.0, 2.5])
    out = tmp_path / "plan.json"
    assert runner.invoke(app, ["plan", str(w), "--profiles", str(p), "--out", str(out), "-q"]).exit_code == 0
    doc = json.loads(w.read_text())
    doc["models"][0]["rate_rps"] = 6.0
    del doc["cyclic"], doc["start_cost_per_replica"]
    static = tmp_path / "static.json"
    static.write_text(json.dumps(doc))
    r = runner.invoke(app, ["check", str(out), str(static), "--profiles", str(p)])
    assert r.exit_code == 1 and "periods" in r.output


def test_diurnal_example_saves_against_the_peak_sized_plan():
    """data/examples/diurnal.yaml: the schedule costs at least 30% less than the peak-sized plan
    (the gap target is bench/schedule.py's and the README's, at the default time limit)."""
    from gpumix.data import DATA_DIR

    res = plan_workload(DATA_DIR / "examples" / "diurnal.yaml", None, PlanOptions(time_limit=20))
    plan = res.plan
    assert len(plan["periods"]) == 24
    assert plan["baseline"]["peak_static"]["savings"] >= 0.30
    assert plan["lower_bound_total"] <= plan["total_cost"]
    assert plan["gap"] <= 0.03


def test_a_long_schedule_prints_its_ends_and_peak_not_every_period(tmp_path):
    """A year of hours would be a 10,000-row table that takes longer to draw than to plan: past a
    week of rows the table shows the first and last day and the peak period."""
    rates = [1.0 + (t % 24) / 10 for t in range(400)]
    rates[200] = 9.0
    w, p = tiny(tmp_path, rates)
    r = runner.invoke(app, ["plan", str(w), "--profiles", str(p), "--time-limit", "20"])
    assert r.exit_code == 0, r.output
    assert "351 of 400 periods not shown" in r.output
    rows = [ln.split("│")[0].strip() for ln in r.output.splitlines() if "│" in ln]
    rows = [int(x) for x in rows if x.isdigit()]
    assert rows == list(range(24)) + [200] + list(range(376, 400))
