"""Bundled catalogs (GPUs, model configs, efficiency factors) and example workloads."""
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent
