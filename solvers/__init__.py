"""Optimizers: stage 1 sizing/routing (PuLP + HiGHS); stage 2 node placement (CP-SAT) builds on it."""
