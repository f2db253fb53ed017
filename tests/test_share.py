"""--share-gpus: co-location model, checker S1-S3, bound validity (brute force), long-tail target, CLI."""
import copy
import itertools
import json
import random

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR
from gpumix.planner.catalog import load_catalog
from gpumix.planner.checker import check_plan
from gpumix.planner.export import FORMATS, export as export_files
from gpumix.planner.plan import make_plan
from gpumix.planner.problem import Config
from gpumix.planner.checker import check_shared
from gpumix.planner.sharing import (Footprint, SharedSet, SharingModel, build_sharing, memory_per_gpu,
                             shared_entries)
from gpumix.solvers.pipeline import PlanOptions, load_problem, plan_workload
from gpumix.solvers.sharing.pooled import ShareParams, solve_shared
from bruteforce import brute_force_cost
from helpers import make_problem

runner = CliRunner()
LONGTAIL = DATA_DIR / "examples" / "longtail.yaml"
GB = 1e9


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def longtail():
    ded = plan_workload(LONGTAIL, options=PlanOptions(time_limit=60, baseline=False))
    shared = plan_workload(LONGTAIL, options=PlanOptions(time_limit=60, share_gpus=True))
    return ded, shared


def test_longtail_shared_plan_costs_at_most_half_and_is_optimal(longtail):
    ded, shared = longtail
    assert ded.plan["status"] == "optimal" and shared.plan["status"] == "optimal"
    assert shared.plan["cost_per_hour"] <= 0.5 * ded.plan["cost_per_hour"]
    assert shared.plan["solver"]["dedicated_only_cost_per_hour"] == pytest.approx(ded.plan["cost_per_hour"])
    assert shared.solution.wall_s < 30  # target 10 s (docs/benchmarks.md); slack for a busy test machine
    assert shared.plan["shared"] and all(len(g["models"]) >= 2 for g in shared.plan["shared"])


def test_longtail_plan_counts_shared_sets_in_gpus_and_model_costs(longtail):
    plan = longtail[1].plan
    used = {}
    for g in plan["replicas"] + plan["shared"]:
        used[g["gpu"]] = used.get(g["gpu"], 0) + g["gpus"]
    assert {g["name"]: g["used"] for g in plan["gpus"]} == used
    assert sum(m["cost_per_hour"] for m in plan["models"]) == pytest.approx(plan["cost_per_hour"])
    for g in plan["shared"]:
        assert g["memory_gb_per_gpu"] <= g["memory_budget_gb_per_gpu"] + 1e-6
        assert g["utilization"] <= plan["max_utilization"] + 1e-9


def test_checker_catches_time_memory_and_double_placement(longtail):
    plan, problem = longtail[1].plan, longtail[1].problem
    wl, _, _ = load_problem(LONGTAIL, None)
    sharing = build_sharing(wl, load_catalog(), problem)
    assert check_plan(plan, problem, sharing=sharing) == []
    assert any("without the workload's model shapes" in str(v) for v in check_plan(plan, problem))

    heavy = copy.deepcopy(plan)  # move every shared model onto the first group's single set
    first = heavy["shared"][0]
    for g in heavy["shared"][1:]:
        first["models"] += g["models"]
    heavy["shared"] = [first]
    heavy["cost_per_hour"] = round(sum(g["cost_per_hour"] for g in heavy["replicas"] + heavy["shared"]), 9)
    errs = check_plan(heavy, problem, sharing=sharing)
    assert any("S3 memory" in str(v) for v in errs), errs

    busy = copy.deepcopy(plan)  # three times the load on one group: demand broken and time too
    for e in busy["shared"][0]["models"]:
        for r in e["routes"]:
            r["rps"] *= 30
    errs = check_plan(busy, problem, sharing=sharing)
    assert any("S2 time" in str(v) for v in errs) and any(str(v).startswith("C1") for v in errs)

    twice = copy.deepcopy(plan)
    twice["shared"][1]["models"].append(copy.deepcopy(twice["shared"][0]["models"][0]))
    assert any("S1" in str(v) for v in check_plan(twice, problem, sharing=sharing))


def _tiny(seed: int):
    """3-4 models, 2 GPU types, 1-2 buckets; footprints drawn so that 1-3 models fit a set."""
    rng = random.Random(seed)
    models = [f"m{i}" for i in range(rng.choice([3, 4]))]
    demand, capacity = {}, {}
    for m in models:
        for k in rng.sample([(256, 64), (1024, 128)], rng.choice([1, 2])):
            demand[(m, k)] = round(rng.uniform(0.05, 2.0), 3)
    price = {"A": 1.0, "B": round(rng.uniform(1.2, 2.6), 2)}
    for m in models:
        for g, mult in (("A", 1.0), ("B", 2.0)):
            capacity[(m, g, 1)] = {k: round(rng.uniform(1.0, 4.0) * mult, 3) for (mm, k) in demand if mm == m}
    problem = make_problem(demand, capacity, price, max_utilization=0.9)
    budget = {"A": 20 * GB, "B": 40 * GB}
    fp = {}
    for m in models:
        w = rng.uniform(4, 17) * GB
        for g in ("A", "B"):
            fp[Config(m, g, 1)] = Footprint(w, 0.1 * GB, 2e5, {k: 3.0 for (mm, k) in demand if mm == m})
    return problem, SharingModel(fp, budget)


def _brute_force_shared(problem, sharing, max_count=32):
    """Cheapest plan over every split into dedicated models and shared groups of 1..max_count sets.
    Time and memory per set only fall as the count grows, so each group takes its least feasible
    count; on _tiny instances 32 sets give every group all the time it can use (sum f <= 16 < 32 U)
    and the least KV share (a model's tokens in flight <= 8 x its longest context), so no larger
    group is feasible where these are not."""
    ded = {m: brute_force_cost(problem.restrict(models={m})) for m in problem.models}
    group_cost = {}

    def cheapest(members):
        if members not in group_cost:
            options = []
            for g in problem.price:
                if not all(Config(m, g, 1) in problem.capacity for m in members):
                    continue
                for count in range(1, max_count + 1):
                    plan = {"shared": shared_entries(problem, sharing, [SharedSet(g, 1, count, members)])}
                    errs, c = check_shared(plan, problem, sharing, {}, {}, set())
                    if not errs:
                        options.append(c)
                        break
            group_cost[members] = min(options, default=float("inf"))
        return group_cost[members]

    best = float("inf")
    models = list(problem.models)
    for labels in itertools.product(range(len(models) + 1), repeat=len(models)):  # 0 = dedicated
        groups = {}
        for m, lab in zip(models, labels):
            if lab:
                groups.setdefault(lab, []).append(m)
        cost = sum(ded[m] for m, lab in zip(models, labels) if not lab)
        cost += sum(cheapest(tuple(members)) for members in groups.values())
        best = min(best, cost)
    return best


@pytest.mark.parametrize("seed", [*range(8), 97, 116])  # 0, 97, 116: riders (a group of 2 sets)
def test_bound_below_every_plan_and_cost_optimal_on_tiny_instances(seed):
    problem, sharing = _tiny(seed)
    sol = solve_shared(problem, sharing, ShareParams(time_limit=30, workers=1))
    brute = _brute_force_shared(problem, sharing)
    assert sol.bound <= brute + 1e-6
    assert sol.cost >= brute - 1e-6
    if sol.status == "optimal":
        assert sol.cost == pytest.approx(brute, rel=1e-4)


def _riders_problem(available):
    """`big` needs 2 replicas of A (f = 1.4, U = 0.9) and leaves 0.4 sets' worth of time and ~7 GB per
    GPU; t1 and t2 (f = 0.1 each, 2 GB of weights) would otherwise share a set of their own."""
    k = (1024, 128)
    demand = {("big", k): 1.4, ("t1", k): 0.1, ("t2", k): 0.1}
    capacity = {(m, "A", 1): {k: 1.0} for m in ("big", "t1", "t2")}
    problem = make_problem(demand, capacity, {"A": 1.0}, {"A": available}, max_utilization=0.9)
    fp = {Config("big", "A", 1): Footprint(8 * GB, 0.1 * GB, 2e5, {k: 3.0})}
    for m in ("t1", "t2"):
        fp[Config(m, "A", 1)] = Footprint(2 * GB, 0.1 * GB, 2e5, {k: 3.0})
    return problem, SharingModel(fp, {"A": 20 * GB})


@pytest.mark.parametrize("available", [None, 3])
def test_small_models_ride_on_a_dedicated_models_replicas(available, monkeypatch):
    problem, sharing = _riders_problem(available)
    params = ShareParams(time_limit=30, workers=1, bins_time_limit=2)
    sol = solve_shared(problem, sharing, params)
    assert sol.shared == (SharedSet("A", 1, 2, ("big", "t1", "t2")),)
    assert sol.replicas == {} and sol.routes == {}
    assert sol.cost == pytest.approx(2.0) and sol.status == "optimal"
    assert sol.dedicated_only_cost == (pytest.approx(4.0) if available is None else None)  # 4 GPUs > 3
    plan = make_plan(problem, sol.status, sol.cost, sol.bound, sol.replicas, sol.routes,
                     shared=shared_entries(problem, sharing, list(sol.shared)))
    assert check_plan(plan, problem, sharing=sharing) == []
    assert plan["shared"][0]["count"] == 2 and plan["shared"][0]["gpus"] == 2

    import gpumix.solvers.sharing.riders as riders  # without the step: big on 2 replicas, t1 and t2 on a set of their own
    monkeypatch.setattr(riders, "ride", lambda problem, sharing, cands, plan, params, left: plan)
    without = solve_shared(problem, sharing, params)
    assert without.cost == pytest.approx(3.0) and without.shared == (SharedSet("A", 1, 1, ("t1", "t2")),)
    assert sol.bound <= without.bound + 1e-9  # the bound does not depend on the step


def test_riders_only_move_when_they_fit_time_and_memory():
    """At 13 GB per GPU big's 8.58 GB on each of 2 sets and t1 + t2's 4.66 GB do not fit; one of them
    would, but moving it alone empties no set, so nothing moves."""
    problem, sharing = _riders_problem(None)
    tight = SharingModel(sharing.footprint, {"A": 13 * GB})
    sol = solve_shared(problem, tight, ShareParams(time_limit=30, workers=1, bins_time_limit=1))
    assert all(s.count == 1 for s in sol.shared) and sol.cost == pytest.approx(3.0)
    plan = make_plan(problem, sol.status, sol.cost, sol.bound, sol.replicas, sol.routes,
                     shared=shared_entries(problem, tight, list(sol.shared)))
    assert check_plan(plan, problem, sharing=tight) == []


@pytest.mark.parametrize("gpu, instances", [("L40", None), ("L40S", ["g6e.xlarge"])])
def test_plan_puts_tiny_models_on_a_busy_models_replicas(tmp_path, gpu, instances):
    """An 8B model at 20 req/s needs several GPUs with memory to spare; two 1B models at 0.05 req/s
    ride on them instead of taking a GPU of their own (per GPU, and on 1-GPU instances)."""
    import yaml

    models = DATA_DIR / "models"
    bucket = [{"input_tokens": 512, "output_tokens": 128, "share": 1.0}]
    doc = {"name": "riders", "gpus": [{"name": gpu}], "tp_degrees": [1], "models": [
        {"name": name, "config": str(models / f"{shape}.json"), "rate_rps": rate,
         "slo": {"ttft_ms": 2000, "tpot_ms": 100}, "buckets": bucket}
        for name, shape, rate in (("big", "llama-3.1-8b", 20), ("tiny0", "llama-3.2-1b", 0.05),
                                  ("tiny1", "llama-3.2-1b", 0.05))]}
    if instances:
        doc["instances"] = instances
    wl = tmp_path / "riders.yaml"
    wl.write_text(yaml.safe_dump(doc))
    res = plan_workload(wl, options=PlanOptions(time_limit=60, share_gpus=True))
    plan = res.plan
    assert plan["replicas"] == [] and len(plan["shared"]) == 1
    group = plan["shared"][0]
    assert group["count"] >= 2 and [e["model"] for e in group["models"]] == ["big", "tiny0", "tiny1"]
    assert plan["status"] == "optimal"
    assert plan["cost_per_hour"] < plan["solver"]["dedicated_only_cost_per_hour"] - 1e-9
    workload, problem, _ = load_problem(wl, None, False)
    sharing = build_sharing(workload, load_catalog(), problem)
    assert check_plan(plan, problem, workload.instances, sharing=sharing) == []


def test_memory_model_scales_kv_with_load_and_splits_it_over_sets():
    fp = Footprint(weights=10 * GB, activations=0.0, kv_per_token=1e5, hold_s={(1000, 100): 2.0})
    low = memory_per_gpu(fp, {(1000, 100): 0.0})
    assert low == pytest.approx(10 * GB + 1e5 * 1100)  # room for one request of the longest context
    busy = memory_per_gpu(fp, {(1000, 100): 10.0})
    assert busy == pytest.approx(10 * GB + 1e5 * 10 * 2.0 * 1100)
    assert memory_per_gpu(fp, {(1000, 100): 10.0}, count=2) == pytest.approx(10 * GB + 1e5 * 5 * 2.0 * 1100)


def test_cli_share_gpus_json_check_and_unchanged_default(tmp_path):
    out = tmp_path / "p.json"
    r = run("plan", LONGTAIL, "--share-gpus", "-q", "--out", out, "--format", "json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["shared"] and plan["inputs"]["share_gpus"] is True
    r = run("check", out, LONGTAIL)
    assert r.exit_code == 0, r.output
    r = run("plan", LONGTAIL, "-q", "--format", "json", "--no-baseline")
    assert r.exit_code == 0 and "shared" not in json.loads(r.stdout)
    r = run("plan", LONGTAIL, "--share-gpus", "-q")
    assert r.exit_code == 0 and "Shared GPU sets" in r.stdout and "dedicated-only plan" in r.stdout


def _longtail_on(tmp_path, instances: str, models: int = 8):
    """The long-tail example's first `models` models with an instance list."""
    import yaml

    doc = yaml.safe_load(LONGTAIL.read_text())
    doc["models"] = doc["models"][:models]
    for m in doc["models"]:
        m["config"] = str((LONGTAIL.parent / m["config"]).resolve())
    wl = tmp_path / "wl.yaml"
    wl.write_text(yaml.safe_dump(doc) + f"instances: {instances}\n")
    return wl


def test_cli_share_gpus_on_instances_places_every_set_inside_a_node(tmp_path):
    wl = _longtail_on(tmp_path, "[g5.xlarge, g5.24xlarge, g4dn.12xlarge]")
    out = tmp_path / "p.json"
    r = run("plan", wl, "--share-gpus", "-q", "--out", out, "--format", "json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["shared"] and plan["nodes"]
    placed = {}
    for nd in plan["nodes"]:
        for s in nd.get("shared", []):
            g = plan["shared"][s["group"]]
            assert (nd["gpu"], len(s["gpu_ids"])) == (g["gpu"], g["tp"])
            assert s["models"] == [e["model"] for e in g["models"]]
            placed[s["group"]] = placed.get(s["group"], 0) + 1
    assert placed == {i: g["count"] for i, g in enumerate(plan["shared"])}
    assert plan["cost_per_hour"] == pytest.approx(sum(nd["price_per_hour"] for nd in plan["nodes"]))
    assert plan["lower_bound_per_hour"] <= plan["cost_per_hour"]
    # the shared plan beats the dedicated-only instance plan of the same workload
    r = run("plan", wl, "-q", "--format", "json", "--no-baseline")
    assert r.exit_code == 0, r.output
    assert plan["cost_per_hour"] < json.loads(r.stdout)["cost_per_hour"]
    r = run("check", out, wl)
    assert r.exit_code == 0, r.output
    workload, problem, _ = load_problem(wl, None, False)
    sharing = build_sharing(workload, load_catalog(), problem)
    assert check_plan(plan, problem, workload.instances, sharing=sharing) == []
    node = next(i for i, nd in enumerate(plan["nodes"]) if nd.get("shared"))
    lost = copy.deepcopy(plan)
    lost["nodes"][node]["shared"].pop()
    assert any("sets of shared[" in str(e) for e in check_plan(lost, problem, workload.instances, sharing=sharing))
    clash = copy.deepcopy(plan)
    clash["nodes"][node]["shared"][0]["gpu_ids"] = [99] * len(clash["nodes"][node]["shared"][0]["gpu_ids"])
    assert any("gpu_ids" in str(e) for e in check_plan(clash, problem, workload.instances, sharing=sharing))
    files = export_files(plan, FORMATS)
    scripts = "".join(v for k, v in files.items() if k.startswith("vllm/node-"))
    for g in plan["shared"]:
        for e in g["models"]:
            assert f"--served-model-name {e['model']} " in scripts


def test_share_gpus_on_instances_keeps_tp_groups_inside_the_largest_node(tmp_path):
    """Only 1-GPU L4 nodes: no shared set or replica may be TP2 or more; a 14B model that needs TP2
    on an L4 makes the workload infeasible (exit 3, the reason named)."""
    wl = _longtail_on(tmp_path, "[g6.xlarge]", models=4)
    plan = plan_workload(wl, options=PlanOptions(time_limit=60, share_gpus=True)).plan
    assert all(g["tp"] == 1 for g in plan["replicas"] + plan.get("shared", []))
    assert all(nd["gpus"] == 1 for nd in plan["nodes"])
    r = run("plan", _longtail_on(tmp_path, "[g6.xlarge]", models=5), "--share-gpus", "-q")
    assert r.exit_code == 3
    assert "legal-qwen2.5-14b" in r.output and "inside one node" in r.output


def test_latency_keeps_models_whose_steps_add_past_a_tpot_apart():
    """S4: t1 and t2 each take a 30 ms decode step, t3 10 ms, every TPOT SLO is 50 ms. Time and memory
    would put all three on one set; stepping in turn, t1 + t2 alone already leave no token within
    50 ms, so the plan pairs t3 with one of them and the other gets a GPU of its own."""
    k = (512, 128)
    demand = {(m, k): 0.1 for m in ("t1", "t2", "t3")}
    capacity = {(m, "A", 1): {k: 1.0} for m in ("t1", "t2", "t3")}
    problem = make_problem(demand, capacity, {"A": 1.0}, {"A": None}, max_utilization=0.9)
    step = {"t1": 0.030, "t2": 0.030, "t3": 0.010}
    fp = {Config(m, "A", 1): Footprint(2 * GB, 0.1 * GB, 2e5, {k: 3.0}, step_s=s, tpot_s=0.050)
          for m, s in step.items()}
    sharing = SharingModel(fp, {"A": 20 * GB})
    sol = solve_shared(problem, sharing, ShareParams(time_limit=30, workers=1, bins_time_limit=2))
    assert sol.cost == pytest.approx(2.0)
    groups = [set(s.models) for s in sol.shared] + [{c.model} for c in sol.replicas]
    assert all(not {"t1", "t2"} <= g for g in groups)
    plan = make_plan(problem, sol.status, sol.cost, sol.bound, sol.replicas, sol.routes,
                     shared=shared_entries(problem, sharing, list(sol.shared)))
    assert check_plan(plan, problem, sharing=sharing) == []
    assert sol.bound <= 1.0 + 1e-9  # the bound leaves latency out: still a lower bound, not tight here
    together = make_plan(problem, "feasible", 1.0, 1.0, {}, {},
                         shared=shared_entries(problem, sharing, [SharedSet("A", 1, 1, ("t1", "t2", "t3"))]))
    errs = check_plan(together, problem, sharing=sharing)
    assert any("S4 latency" in str(e) and "t1 30.0 + t2 30.0 + t3 10.0" in str(e) for e in errs)
    no_latency = SharingModel({c: Footprint(f.weights, f.activations, f.kv_per_token, f.hold_s)
                               for c, f in fp.items()}, {"A": 20 * GB})
    assert solve_shared(problem, no_latency, ShareParams(time_limit=30, workers=1)).cost == pytest.approx(1.0)


def test_latency_uses_the_profiles_measured_step_where_there_is_one(tmp_path):
    """S4's step: a `gpumix profile` fit (decode_ms a + b B + c B ctx at batch 1) for the config it
    measured, the roofline for the others; malformed fits are skipped."""
    from gpumix.planner.catalog import norm_name
    from gpumix.planner.profiles import decode_step_fits

    prof = tmp_path / "profiles.json"
    prof.write_text(json.dumps({"entries": [], "profiles": [
        {"model": "chat-llama-3.1-8b", "gpu": "L40", "tp": 1,
         "fit": {"decode_ms": {"formula": "a + b*B + c*B*ctx", "a": 40.0, "b": 1.0, "c": 0.001}}},
        {"model": "code-mistral-7b", "gpu": "L40", "tp": 1, "fit": {"decode_ms": {"a": "x"}}}]}))
    fits = decode_step_fits(prof)
    assert fits == {(norm_name("chat-llama-3.1-8b"), norm_name("L40"), 1): (40.0, 1.0, 0.001)}
    wl, problem, _ = load_problem(LONGTAIL, None, False)
    measured = build_sharing(wl, load_catalog(), problem, fits)
    roofline = build_sharing(wl, load_catalog(), problem)
    c = Config("chat-llama-3.1-8b", "L40", 1)
    context = 512 + (128 + 1) / 2  # the shortest bucket's mean context
    assert measured.footprint[c].step_s == pytest.approx((40.0 + 1.0 + 0.001 * context) / 1e3)
    assert 0 < roofline.footprint[c].step_s < measured.footprint[c].step_s
    other = Config("code-mistral-7b", "L40", 1)
    assert measured.footprint[other].step_s == roofline.footprint[other].step_s > 0
    assert measured.footprint[c].tpot_s == pytest.approx(0.1)


def test_renamed_longtail_still_proves_the_optimum(tmp_path):
    """bench/share.py's copy of the long tail (other names, 4-digit rates): the pooled solutions then
    pick other set types, so the all-at-once packing must see every type any pooled solution chose,
    not only the best one's (it stopped 3.7% above the bound when it saw L4 but not T4)."""
    import yaml
    doc = yaml.safe_load(LONGTAIL.read_text())
    for i, m in enumerate(doc["models"]):
        m["name"] = f"ft{i:03d}-{m['config'].rsplit('/', 1)[1].removesuffix('.json')}"
        m["config"] = str(DATA_DIR / "models" / m["config"].rsplit("/", 1)[1])
        m["rate_rps"] = round(1.5 / (i + 1) ** 1.2, 4)  # the bench's rates, unrounded to 3 digits
    path = tmp_path / "renamed.yaml"
    path.write_text(yaml.safe_dump(doc))
    shared = plan_workload(path, options=PlanOptions(time_limit=60, share_gpus=True, baseline=False))
    assert shared.plan["status"] == "optimal"
    assert shared.plan["cost_per_hour"] == pytest.approx(7.366, abs=0.01)
