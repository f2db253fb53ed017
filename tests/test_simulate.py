"""`gpumix simulate`: the engine against a step-by-step reference, validate's arrivals and summary,
determinism, KV-limit queueing, shared sets, the verdict at 1x and 3x, bad input, and the
per-model max_utilization it writes and `gpumix plan` reads. Hand-written latency fits (no torch),
short simulated runs."""
import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.planner.roofline import slo_capacity
from gpumix.profiler.load import generator as loadgen
from gpumix.profiler.simulate import report as simreport
from gpumix.profiler.simulate.engine import ModelEngine, Unit
from gpumix.profiler.simulate.steps import StepModel

runner = CliRunner()
FIT = {"prefill_ms": {"a": 4.0, "b": 0.05, "c": 0.0}, "decode_ms": {"a": 6.0, "b": 0.3, "c": 0.002}}
SLOTS = 16
BUCKETS = [(48, 16, 0.5), (96, 32, 0.5)]
SLO = (1500.0, 100.0)


def capacity(fit=FIT, buckets=BUCKETS, slots=SLOTS, slo=SLO) -> dict:
    """max_rps per bucket from the fit, as `gpumix profile` computes its entries."""
    p, d = fit["prefill_ms"], fit["decode_ms"]
    out = {}
    for i, o, _ in buckets:
        ctx = i + (o + 1) / 2
        state, why = slo_capacity((p["a"] + p["b"] * i + p["c"] * i * i) * 1e-3,
                                  lambda b: (d["a"] + d["b"] * b + d["c"] * b * ctx) * 1e-3, o, *slo, slots)
        out[(i, o)] = 0.0 if why else state.rate
    return out


def workload_text(rate: float, models=("small",), extra: str = "", gpu: str = "testcpu") -> str:
    text = ""
    for m in models:
        text += f"""
  - name: {m}
    rate_rps: {rate}
    slo: {{ttft_ms: {SLO[0]:g}, tpot_ms: {SLO[1]:g}}}
    buckets:
""" + "".join(f"      - {{input_tokens: {i}, output_tokens: {o}, share: {s}}}\n" for i, o, s in BUCKETS) + extra
    return f"models:{text}gpus:\n  - {{name: {gpu}, price_per_hour: 0.1}}\nmax_utilization: 0.9\n"


def profile_doc(models=("small",), gpu="testcpu", fit=FIT, slots=SLOTS) -> dict:
    cap = capacity(fit, slots=slots)
    return {"entries": [{"model": m, "gpu": gpu, "tp": 1, "input_tokens": i, "output_tokens": o, "max_rps": cap[(i, o)]}
                        for m in models for i, o, _ in BUCKETS],
            "profiles": [{"model": m, "gpu": gpu, "tp": 1, "fit": json.loads(json.dumps(fit)),
                          "provenance": {"device": "cpu", "sweep": {"decode": [{"batch": slots}]}}} for m in models]}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A plan of `small` at 2 replicas' worth of load (the plan sizes it at max_utilization 0.9)."""
    d = tmp_path_factory.mktemp("sim")
    cap = 1 / sum(s / capacity()[(i, o)] for i, o, s in BUCKETS)
    (d / "wl.yaml").write_text(workload_text(round(1.6 * cap, 3)))
    (d / "profiles.json").write_text(json.dumps(profile_doc()))
    r = invoke("plan", d / "wl.yaml", "--profiles", d / "profiles.json", "--out", d / "plan.json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads((d / "plan.json").read_text())["replicas"][0]["count"] == 2
    return d


# --- the engine ---------------------------------------------------------------------------------

def engine(kv_tokens=10_000, slots=SLOTS, padded=True, fit=FIT):
    sm = StepModel("profile fit", padded, slots, kv_tokens, fit=(tuple(fit["prefill_ms"].values()),
                                                                 tuple(fit["decode_ms"].values())))
    return ModelEngine(sm)


def fill(e, rate, seconds=20.0, seed=1):
    for a in loadgen.arrivals([(i, o, rate * s) for i, o, s in BUCKETS], seconds, seed):
        e.push(a.t, a.input_tokens, a.output_tokens)
    e.model = "small"
    return e


@pytest.mark.parametrize("padded", [True, False])
def test_decode_jumps_agree_with_stepping_one_step_at_a_time(padded):
    runs = []
    for stepwise in (False, True):
        u = Unit([fill(engine(padded=padded), 30.0)])
        u.stepwise = stepwise
        u.run(math.inf, 40.0)
        runs.append(u.engines[0])
    fast, slow = runs
    assert fast.events < slow.events / 1.3  # the jumps do save work
    assert fast.steps_run == slow.steps_run
    np.testing.assert_allclose(fast.first, slow.first, rtol=1e-9)
    np.testing.assert_allclose(fast.done, slow.done, rtol=1e-9)


def test_a_tiny_kv_cache_makes_requests_queue():
    rows = {}
    for kv in (10_000, 130):  # 130 tokens: one 96+32 request, or two 48+16 ones, at a time
        u = Unit([fill(engine(kv_tokens=kv), 12.0)])
        u.run(math.inf, 60.0)
        rows[kv] = simreport.summarize(simreport.unit_parts(u), 60.0, *SLO, 20.0)
    big, tiny = rows[10_000], rows[130]
    assert big["queue_length"]["p99"] <= 2 and tiny["queue_length"]["p99"] >= 5
    assert tiny["ttft_ms"]["p99"] > 3 * big["ttft_ms"]["p99"]
    too_long = Unit([fill(engine(kv_tokens=100), 5.0)])  # 96 + 32 > 100: refused, as the runtime does
    too_long.run(math.inf, 60.0)
    row = simreport.summarize(simreport.unit_parts(too_long), 60.0, *SLO, 20.0)
    assert row["failed"] == 50 and "KV cache" in row["errors"][0]["error"]


def test_shared_set_steps_models_in_turn_and_they_compete():
    alone = Unit([fill(engine(), 8.0)])
    alone.run(math.inf, 60.0)
    a, b = fill(engine(), 8.0), fill(engine(), 8.0, seed=2)
    b.model = "other"
    pair = Unit([a, b])
    pair.run(math.inf, 60.0)
    solo = simreport.summarize(simreport.unit_parts(alone), 60.0, *SLO, 20.0)
    shared = simreport.summarize([p for p in simreport.unit_parts(pair) if p["model"] == "small"], 60.0, *SLO, 20.0)
    assert shared["completed"] == solo["completed"] == 160
    assert shared["tpot_ms"]["p50"] > 1.5 * solo["tpot_ms"]["p50"]  # B's steps come between A's
    assert a.steps_run > 0 and b.steps_run > 0


def test_summary_is_generators_summary():
    e = fill(engine(), 25.0)
    u = Unit([e])
    u.run(math.inf, 25.0)
    records = []
    for k in range(len(e.t_arr)):
        a = loadgen.Arrival(e.t_arr[k], e.n_in[k], e.n_out[k], k)
        r = loadgen.Record(a, sent=a.t, tokens=a.output_tokens)
        if e.done[k] <= 25.0:
            r.first, r.last, r.done = e.first[k], e.done[k], e.done[k]
        else:
            r.error = "unfinished 5 s after the last arrival"
        records.append(r)
    want = loadgen.summarize(records, [[r.arrival for r in records]], *SLO)
    got = simreport.summarize(simreport.unit_parts(u), 25.0, *SLO, 5.0)
    for key in ("requests", "completed", "failed", "offered_rps", "achieved_rps", "ttft_ms", "tpot_ms", "e2e_ms",
                "slo_attainment"):
        assert got[key] == pytest.approx(want[key], rel=1e-6, abs=2e-3), key


# --- the command --------------------------------------------------------------------------------

def test_arrivals_are_validates_streams(planned):
    from gpumix.profiler.simulate.run import SimOptions, build_unit, prepare
    from gpumix.profiler.validate.groups import streams
    from gpumix.profiler.validate.options import ValidateOptions

    opts = SimOptions(duration_s=10, seed=7, arrivals="gamma", gamma_shape=0.5)
    setup = prepare(planned / "plan.json", None, opts)
    want = streams(setup.groups[0], ValidateOptions(duration_s=10, seed=7, arrivals="gamma", gamma_shape=0.5), 2)
    for j in range(2):
        e = build_unit(setup, 0, j, opts).engines[0]
        assert [(a.t, a.input_tokens, a.output_tokens) for a in want[j].schedule] == \
            list(zip(e.t_arr, e.n_in, e.n_out))


def test_sound_plan_passes_and_fails_at_three_times_the_load(planned):
    r = invoke("simulate", planned / "plan.json", "--duration", 30, "--report", planned / "r1.json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads((planned / "r1.json").read_text())
    (g,) = rep["groups"]
    assert g["passed"] and g["replicas_run"] == 2 and g["engine"]["source"] == "profile fit"
    assert rep["models"][0]["model"] == "small" and rep["models"][0]["passed"]
    assert set(g["queue_length"]) == {"p50", "p90", "p99"} and g["achieved_rps"] > 0.95 * 2 * g["planned_rps"]
    r = invoke("simulate", planned / "plan.json", "--duration", 30, "--rate-scale", 3, "-q")
    assert r.exit_code == 1
    assert "gpumix: failed: small on testcpu TP1:" in r.output and "planned" in r.output


def test_same_seed_same_report_at_any_process_count_other_seed_differs(planned):
    reps = []
    for seed, procs in ((3, 1), (3, 2), (4, 2)):
        r = invoke("simulate", planned / "plan.json", "--duration", 10, "--seed", seed, "--processes", procs,
                   "--arrivals", "gamma", "--report", planned / f"d{seed}{procs}.json", "-q")
        assert r.exit_code in (0, 1), r.output
        reps.append((planned / f"d{seed}{procs}.json").read_text())
    assert reps[0] == reps[1] and reps[0] != reps[2]


def test_least_loaded_router_serves_everything(planned):
    r = invoke("simulate", planned / "plan.json", "--duration", 10, "--router", "least-loaded",
               "--report", planned / "ll.json", "-q")
    assert r.exit_code == 0, r.output
    g = json.loads((planned / "ll.json").read_text())["groups"][0]
    assert g["completed"] == g["requests"] > 0


@pytest.mark.parametrize("args, field", [
    (["--duration", "0"], "--duration"),
    ([], "--duration"),
    (["--duration", "5", "--router", "random"], "--router"),
    (["--duration", "5", "--arrivals", "uniform"], "--arrivals"),
    (["--duration", "5", "--out", "w.yaml"], "--out"),
])
def test_bad_options_exit_2_in_one_line(planned, args, field):
    r = invoke("simulate", planned / "plan.json", *args)
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpumix: error:") and field in lines[0]


def test_bad_files_exit_2_naming_file_and_field(planned, tmp_path):
    plan = json.loads((planned / "plan.json").read_text())
    plan["replicas"][0]["count"] = 0
    (tmp_path / "p.json").write_text(json.dumps(plan))
    r = invoke("simulate", tmp_path / "p.json", planned / "wl.yaml", "--duration", 5)
    assert r.exit_code == 2 and "replicas[0].count" in r.output and len(r.output.strip().splitlines()) == 1
    bad = profile_doc()
    bad["profiles"][0]["fit"]["decode_ms"]["a"] = "fast"
    (tmp_path / "prof.json").write_text(json.dumps(bad))
    r = invoke("simulate", planned / "plan.json", "--profiles", tmp_path / "prof.json", "--duration", 5)
    assert r.exit_code == 2 and "profiles[0].fit" in r.output
    r = invoke("simulate", planned / "plan.json", "--profiles", tmp_path / "missing.json", "--duration", 5)
    assert r.exit_code == 2 and "missing.json" in r.output and "--profiles" in r.output
    (tmp_path / "none.json").write_text(json.dumps({"entries": []}))
    r = invoke("simulate", planned / "plan.json", "--profiles", tmp_path / "none.json", "--duration", 5)
    assert r.exit_code == 2 and "no latency fit" in r.output and "replicas[0]" in r.output


# --- per-model max_utilization ------------------------------------------------------------------

def test_per_model_max_utilization_sizes_the_plan(planned, tmp_path):
    (tmp_path / "wl.yaml").write_text((planned / "wl.yaml").read_text().replace(
        "    buckets:", "    max_utilization: 0.45\n    buckets:", 1))
    r = invoke("plan", tmp_path / "wl.yaml", "--profiles", planned / "profiles.json", "--out", tmp_path / "p.json", "-q")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "p.json").read_text())["replicas"][0]["count"] == 4  # twice 0.9's two
    r = invoke("check", tmp_path / "p.json", tmp_path / "wl.yaml", "--profiles", planned / "profiles.json")
    assert r.exit_code == 0, r.output
    (tmp_path / "bad.yaml").write_text((planned / "wl.yaml").read_text().replace(
        "    buckets:", "    max_utilization: 1.5\n    buckets:", 1))
    r = invoke("plan", tmp_path / "bad.yaml", "--profiles", planned / "profiles.json", "-q")
    assert r.exit_code == 2 and "models[0].max_utilization" in r.output


def test_find_max_utilization_writes_a_workload_plan_accepts(planned, tmp_path):
    out = tmp_path / "sub" / "found.yaml"
    r = invoke("simulate", planned / "plan.json", "--duration", 20, "--find-max-utilization", "--out", out, "-q")
    assert r.exit_code == 0, r.output
    assert "highest utilization" in r.output
    import yaml

    found = yaml.safe_load(out.read_text())["models"][0]["max_utilization"]
    assert 0.2 < found <= 1.0
    r = invoke("plan", out, "--profiles", planned / "profiles.json", "--out", tmp_path / "p.json", "-q")
    assert r.exit_code == 0, r.output


def test_shared_plan_simulates_each_model_in_its_set_and_names_it_when_it_fails(tmp_path):
    from helpers import TINY_CONFIG

    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    cap = 1 / sum(s / capacity()[(i, o)] for i, o, s in BUCKETS)
    (tmp_path / "wl.yaml").write_text(workload_text(round(0.1 * cap, 2), models=("a", "b"), gpu="L4").replace(
        "    rate_rps", "    config: tiny.json\n    rate_rps"))
    (tmp_path / "prof.json").write_text(json.dumps(profile_doc(models=("a", "b"), gpu="L4")))
    r = invoke("plan", tmp_path / "wl.yaml", "--profiles", tmp_path / "prof.json", "--share-gpus",
               "--out", tmp_path / "plan.json", "-q")
    assert r.exit_code == 0, r.output
    assert len(json.loads((tmp_path / "plan.json").read_text())["shared"]) == 1
    r = invoke("simulate", tmp_path / "plan.json", "--duration", 15, "--report", tmp_path / "r.json", "-q")
    assert r.exit_code == 0, r.output
    rep = json.loads((tmp_path / "r.json").read_text())
    assert [(g["model"], g["shared"], g["sharing_with"]) for g in rep["groups"]] == [("a", 0, ["b"]), ("b", 0, ["a"])]
    assert rep["shared"][0]["passed"] and rep["shared"][0]["sets_run"] == 1
    r = invoke("simulate", tmp_path / "plan.json", "--duration", 15, "--rate-scale", 12, "-q")
    assert r.exit_code == 1 and "in shared[0] (a + b) on L4 TP1" in r.output


def test_roofline_engine_is_sized_by_the_buckets_a_group_serves():
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.precision import Precision
    from gpumix.planner.roofline import Efficiency
    from gpumix.profiler.simulate.steps import from_roofline

    cat = load_catalog()
    shape, gpu = cat.model("gemma-2-9b"), cat.gpu("A10G")
    eff = Efficiency.from_dict(cat.gpu_efficiency("A10G"))
    short = from_roofline(shape, gpu, 1, eff, Precision(), [(128, 32), (512, 64)])
    assert isinstance(short, StepModel) and not short.padded and short.kv_tokens >= 576
    assert short.prefill_s(512) > short.prefill_s(128) > 0
    alpha, beta = short.decode_line(8)
    assert alpha > 0 and beta >= 0
    assert "fewer than one" in from_roofline(shape, gpu, 1, eff, Precision(), [(8192, 512)])
