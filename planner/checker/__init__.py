"""Independent plan checker: re-derives every constraint from the problem data, trusts nothing the
solver wrote except counts and routes. Every plan passes it before it is written.

Findings are records (checker/findings.py: code, where, message); str() is the line people read.

Checks (labels as in planner/problem.py):
  schema  keys, types, status in {optimal, feasible}, count >= 1 integer, one group per config
  C1      routes of each (model, bucket) add up to its demand; no route to an unknown bucket
  C2      each group's load sum(rps / mu) <= count * U, with mu from the capacity table
  C3      GPUs used per type <= available
  cost    cost_per_hour = sum price * tp * count;  lower bound <= cost; gap consistent
  nodes   (plans with `nodes`, check_nodes) TP groups inside one node on distinct GPU ids of the node's
          type, node shapes and prices as the instance list says, nodes per instance type <= available,
          node replicas = group counts, sets of each shared group on nodes = its count (each set a TP
          group of the group's GPU type inside one node), cost_per_hour = sum of node prices, spot
          share, spare nodes
  partial (plans with `partial`) C1 against served_fraction x demand, 0 <= served_fraction <= 1
  shared  (plans with `shared`, checker/shared.py) S1 a shared model in one group and on no
          dedicated replica, S2 time sum_m f_m <= count x U, S3 memory per GPU within the GPU's budget,
          S4 the members' least decode steps within every member's TPOT SLO;
          their routes count in C1, their GPUs in C3, their price x tp x count in cost
  periods (plans with `periods`, checker/periods.py) every period as a plan against its own demand
          and availability, starts recomputed from consecutive periods, totals, the peak period
"""
from gpumix.planner.checker.findings import CODES, LOAD_CODES, Finding
from gpumix.planner.checker.nodes import check_nodes
from gpumix.planner.checker.periods import check_periods
from gpumix.planner.checker.plan import check_plan
from gpumix.planner.checker.shared import check_shared

__all__ = ["CODES", "LOAD_CODES", "Finding", "check_nodes", "check_periods", "check_plan", "check_shared"]
