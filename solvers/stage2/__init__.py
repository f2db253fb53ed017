"""Stage 2: replicas onto real instances (CP-SAT packing, node search, node MILP, placement, churn)."""
