"""The solvers' result vocabulary: one status enum, one rule from (cost, bound) to status and gap,
one deadline object handed down from the orchestrators.

Status      what a solve ended with; its values are the strings plan documents carry ("optimal",
            "feasible", ...), and as a StrEnum it is a str: json.dumps, f-strings and == "optimal"
            see the value.
certify     cost, a valid lower bound and whether the solver proved its own part optimal ->
            Certificate(status, gap); OPTIMAL iff proven and cost - bound <= mip_gap * cost + ABS_TOL.
Deadline    a point on the perf_counter clock (or none); every inner time limit is a share of what
            it has left, so no phase runs past the caller's limit.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

ABS_TOL = 1e-9  # $/h: float noise allowed on top of the relative gap when certifying optimality
INNER_GAP = 0.1  # inner MILPs stop at this share of the plan's --mip-gap, so their parts certify within it


class Status(StrEnum):
    OPTIMAL = "optimal"  # proven within the requested gap
    FEASIBLE = "feasible"  # a plan, not proven within the gap
    INFEASIBLE = "infeasible"  # proven: no plan exists
    NO_SOLUTION = "no_solution"  # no plan found in time, nothing proven

    @property
    def has_plan(self) -> bool:
        return self in (Status.OPTIMAL, Status.FEASIBLE)


@dataclass(frozen=True)
class Certificate:
    status: Status  # OPTIMAL or FEASIBLE
    gap: float  # (cost - bound) / cost, 0 for a free plan


def gap(cost: float, bound: float) -> float:
    """The relative gap of a plan of `cost` over a lower `bound` (0 when the plan costs nothing)."""
    return 0.0 if cost <= 0 else max(cost - bound, 0.0) / cost


def closed(cost: float, bound: float, mip_gap: float) -> bool:
    """Is `bound` within the gap of `cost`? The one tolerance rule every solver uses."""
    return cost - bound <= mip_gap * cost + ABS_TOL


def certify(cost: float, bound: float, *, proven: bool, mip_gap: float) -> Certificate:
    """Status and gap of a plan: OPTIMAL when its parts were proven and the bound closes the gap."""
    ok = proven and closed(cost, bound, mip_gap)
    return Certificate(Status.OPTIMAL if ok else Status.FEASIBLE, gap(cost, bound))


@dataclass(frozen=True)
class HighsResult:
    """One HiGHS run, as HiGHS itself reports it (not PuLP's LpStatus)."""

    status: Status
    objective: float | None  # the incumbent's objective, None without one
    bound: float  # dual bound; inf when infeasible, -inf when HiGHS has none
    wall_s: float


@dataclass(frozen=True)
class Deadline:
    """When the caller's time limit ends (perf_counter seconds); end None: no limit."""

    end: float | None = None

    @classmethod
    def start(cls, limit_s: float | None) -> Deadline:
        return cls(None if limit_s is None else time.perf_counter() + limit_s)

    @property
    def limited(self) -> bool:
        return self.end is not None

    def remaining(self) -> float:
        """Seconds left, possibly negative; inf without a limit."""
        return math.inf if self.end is None else self.end - time.perf_counter()

    def left(self, share: float = 1.0, *, floor: float = 0.0, cap: float | None = None) -> float | None:
        """A phase's time limit: `share` of what is left, at most `cap`, at least `floor` (a solver
        needs some time to return anything). Without a deadline: `cap` (None when no cap)."""
        if self.end is None:
            return cap
        s = (self.end - time.perf_counter()) * share
        return max(s if cap is None else min(s, cap), floor)

    def expired(self) -> bool:
        return self.end is not None and time.perf_counter() >= self.end

    def sub(self, share: float, *, floor: float = 0.0) -> Deadline:
        """A child deadline ending after `share` of what is left (at least `floor` seconds from now)."""
        return self if self.end is None else Deadline(time.perf_counter() + self.left(share, floor=floor))
