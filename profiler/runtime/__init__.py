"""The minimal torch runtime the profiler measures: model, tensor parallelism, engine, replicas
(one model, or several sharing a device) and the one builder of replica specs.

Imports torch when a model is built; never imported on the planning path (planner, solvers, cli.app).
"""
