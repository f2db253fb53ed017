"""Bundled catalogs (GPUs, model configs, efficiency factors) and example workloads."""
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
EXAMPLE_WORKLOAD = DATA_DIR / "examples" / "workload.yaml"  # what commands plan when given no workload
