"""gpumix: cost-optimal heterogeneous GPU fleets for serving several LLMs under latency SLOs.

Subpackages, lowest layer first (docs/architecture.md): planner (problem model, capacity, plan,
checker), profiler (measurement, runtime, validation) and solvers (stage 1, stage 2, sharing),
both on planner; cli (the typer app) on all of them; data (bundled catalogs and examples).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gpumix")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
