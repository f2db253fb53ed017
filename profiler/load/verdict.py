"""Pass/fail criteria for a measured load: the one place that says whether a run held.

A run at a planned (or offered) rate holds when both hold:
  R1  achieved_rps   >= min_rate_fraction  x planned rps   (0.95: it kept pace with its arrivals)
  R2  slo_attainment >= min_slo_attainment                 (0.99 of all requests within TTFT and TPOT)

`gpumix validate` judges every group by them, `gpumix profile endpoint` every rate it tries. A
row's status says why it did not pass: `failed` (it ran and missed R1 or R2) or `error` (the
replica died or the generator gave up: the measurement is cut short), never both.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MIN_RATE_FRACTION = 0.95
MIN_SLO_ATTAINMENT = 0.99


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"  # the run broke: a replica or server died, or sending stopped
    SKIPPED = "skipped"  # not run here (other GPU type, model not served, no load)


@dataclass(frozen=True)
class Criteria:
    min_rate_fraction: float = MIN_RATE_FRACTION
    min_slo_attainment: float = MIN_SLO_ATTAINMENT

    def holds(self, row: dict, planned_rps: float) -> bool:
        """R1 and R2 for a measured row (loadgen.summarize's keys)."""
        return (row["achieved_rps"] >= self.min_rate_fraction * planned_rps
                and row["slo_attainment"] >= self.min_slo_attainment)


def verdict(row: dict, planned_rps: float, slo, criteria: Criteria = Criteria()) -> list[str]:
    """Why a measured row fails R1/R2, one line each (empty: it passed); slo: ttft_ms, tpot_ms."""
    reasons = []
    if row["achieved_rps"] < criteria.min_rate_fraction * planned_rps:
        reasons.append(f"achieved {row['achieved_rps']:.2f} of {planned_rps:.2f} req/s planned "
                       f"({row['achieved_rps'] / planned_rps:.0%}, needs {criteria.min_rate_fraction:.0%})")
    if row["slo_attainment"] < criteria.min_slo_attainment:
        reasons.append(f"{row['slo_attainment']:.1%} of requests within the SLO (TTFT {slo.ttft_ms:g} ms, "
                       f"TPOT {slo.tpot_ms:g} ms; needs {criteria.min_slo_attainment:.0%})")
    return reasons


def status(reasons: list[str], broken: bool) -> Status:
    """A measured row's status from its reasons; broken: the run itself was cut short."""
    return Status.PASSED if not reasons else Status.ERROR if broken else Status.FAILED
