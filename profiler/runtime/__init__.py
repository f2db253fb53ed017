"""The minimal torch runtime the profiler measures: model, tensor parallelism, engine.

Imports torch; never imported on the planning path (planner, solvers, cli.app).
"""
