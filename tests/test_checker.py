"""The checker's findings are records: a code, where, and a message; str() is the line people read."""
from __future__ import annotations

import copy
import json

import pytest

from gpumix.planner.checker import CODES, LOAD_CODES, Finding, check_plan
from gpumix.solvers.pipeline import PlanOptions, plan_workload


@pytest.fixture(scope="module")
def planned():
    result = plan_workload(None, None, PlanOptions(baseline=False))
    return result.plan, result.problem


def test_a_valid_plan_has_no_findings(planned):
    plan, problem = planned
    assert check_plan(json.loads(json.dumps(plan)), problem) == []


def test_findings_carry_codes_and_read_as_one_line(planned):
    plan, problem = planned
    bad = copy.deepcopy(plan)
    bad["replicas"][0]["count"] = 0  # schema
    bad["cost_per_hour"] = plan["cost_per_hour"] + 1.0  # cost
    found = check_plan(bad, problem)
    assert all(isinstance(f, Finding) and f.code in CODES for f in found)
    by_code = {f.code: f for f in found}
    assert str(by_code["schema"]) == "replicas[0].count: must be a positive integer, got 0"
    assert by_code["schema"].where == "replicas[0].count"
    assert by_code["C1"].where.startswith("C1 ") and "routes carry" in by_code["C1"].message
    assert str(by_code["cost"]).startswith("cost_per_hour: plan says ")


def test_overload_is_a_load_finding_and_a_bad_reference_is_not(planned):
    plan, problem = planned
    loaded = copy.deepcopy(plan)
    for r in loaded["replicas"][0]["routes"]:
        r["rps"] *= 10
    codes = {f.code for f in check_plan(loaded, problem)}
    assert "C2" in codes and "C1" in codes and codes <= LOAD_CODES
    unknown = copy.deepcopy(plan)
    unknown["replicas"][0]["model"] = "no-such-model"
    f = [f for f in check_plan(unknown, problem) if f.code not in LOAD_CODES]
    assert f and f[0] == Finding("schema", "replicas[0].model", "'no-such-model' is not in the workload")


def test_an_unknown_code_is_refused():
    with pytest.raises(AssertionError):
        Finding("C9", "x", "y")


@pytest.mark.parametrize("key", ["price_per_gpu_hour", "cost_per_hour", "gpus"])
def test_a_group_figure_that_disagrees_with_the_workload_is_a_finding(planned, key):
    """The plan's total is recomputed from the workload's prices, but exports and people read each
    group's own price, cost and GPU count: a doubled one must not pass."""
    plan, problem = planned
    bad = copy.deepcopy(plan)
    bad["replicas"][0][key] *= 2
    found = check_plan(bad, problem)
    assert [f.where for f in found] == [f"replicas[0].{key}"]
