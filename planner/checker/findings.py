"""What the checker reports: one record per violated rule, and the tolerances it judges with."""
from __future__ import annotations

import math
from dataclasses import dataclass

REL_TOL = 1e-6
ABS_TOL = 1e-9

# The codes a finding carries: the constraint labels of planner/problem.py and planner/sharing.py
# (C1 demand, C2 capacity, C3 availability, S1 one group, S2 time, S3 memory, S4 latency), and
#   schema   a key, type or reference is wrong (unknown model, GPU, bucket; bad counts)
#   cost     cost_per_hour missing or not the sum the plan's groups or nodes price
#   bound    lower_bound_per_hour missing or above the cost
#   partial  served fractions of a partial plan
#   nodes    placement on nodes: TP groups, GPU ids, shapes, prices, counts, availability per type
#   spot     traffic on spot nodes beyond spot_share
#   spare    the plan does not survive losing spare_nodes nodes
CODES = frozenset({"schema", "C1", "C2", "C3", "cost", "bound", "partial", "nodes", "spot", "spare",
                   "S1", "S2", "S3", "S4"})
# Findings about load, demand and price, not about the plan's form: `gpumix validate` reports them as
# notes and lets the measurement judge the load; every other code there is bad input (exit 2).
LOAD_CODES = frozenset({"C1", "C2", "C3", "S2", "S3", "S4", "cost", "bound"})


@dataclass(frozen=True)
class Finding:
    """One violation: `code` (CODES), `where` (the plan field or the subject, as a person reads it)
    and `message`. str() is the one line people see: "where: message"."""

    code: str
    where: str
    message: str

    def __post_init__(self):
        assert self.code in CODES, self.code

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def close(a: float, b: float, rel: float = REL_TOL) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1.0) + ABS_TOL


def num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def pos_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1
