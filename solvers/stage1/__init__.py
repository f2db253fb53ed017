"""Stage 1: sizing and routing (PuLP + HiGHS): per-model decomposition, presolve, the coupled solve."""
