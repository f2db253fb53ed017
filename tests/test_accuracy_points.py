"""bench/accuracy_points.json is well formed and bench/accuracy.py's table builder writes its markers.
No network, no timing: the points file is read, the catalog is loaded, nothing is estimated."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from gpumix.planner.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[1]


def _accuracy():
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


acc = _accuracy()
POINTS = acc.load_points()
FIELDS = ("id", "model", "gpu", "tp", "quantization", "kv_cache_dtype", "input_tokens", "output_tokens",
          "concurrency", "metric", "value", "stack", "source", "notes")


def test_points_cover_the_brief():
    published = [p for p in POINTS if p["stack"] in acc.PUBLISHED_STACKS]
    assert len(published) >= 20
    assert {p["metric"] for p in POINTS} == set(acc.METRICS)
    assert len({p["id"] for p in POINTS}) == len(POINTS), "ids are unique"


@pytest.mark.parametrize("p", POINTS, ids=lambda p: p["id"])
def test_point_is_well_formed(p):
    assert set(FIELDS) <= set(p), f"missing {set(FIELDS) - set(p)}"
    assert p["metric"] in acc.METRICS
    assert p["stack"] in (*acc.PUBLISHED_STACKS, acc.AIC)
    assert p["quantization"] in acc.QUANTIZATIONS and p["kv_cache_dtype"] in acc.KV_CACHE_DTYPES
    assert len(p["source"]) > 20, "a checkable source: URL or repo + path + commit, with the quote"
    assert isinstance(p["value"], (int, float)) and p["value"] > 0
    assert isinstance(p["tp"], int) and p["tp"] >= 1
    assert p["input_tokens"] >= 1 and p["output_tokens"] >= 1
    assert p["concurrency"] is None or p["concurrency"] >= 1
    if p["concurrency"] is None:
        assert p["metric"] == "output_tokens_per_s" and "max load" in p["notes"]


@pytest.mark.parametrize("p", POINTS, ids=lambda p: p["id"])
def test_model_and_gpu_resolve_or_are_pending(p):
    cat = load_catalog()
    assert cat.gpu(p["gpu"]) is not None, f"unknown GPU {p['gpu']}"
    shape, _ = acc.resolve_model(cat, p["model"])
    assert shape is not None or p["model"] in acc.PENDING_MODELS, f"unknown model {p['model']}"


def test_table_builder_writes_the_markers():
    done = acc.Row(POINTS[0], POINTS[0]["value"] * 1.5)
    skipped = acc.Row(POINTS[1], None, "pending: x is not in the catalog yet")
    rows = [done, skipped]
    summary = acc.summarize(rows)
    assert summary["all"]["n"] == 1 and summary["all"]["worst_error"] == 1.5
    assert summary["not_compared"] == [POINTS[1]["id"]]
    block = acc.build_table(rows, summary, "test")
    assert block.startswith(acc.BEGIN) and block.endswith(acc.END)
    assert POINTS[0]["id"] in block and "| 1.50 |" in block
    doc = "# Benchmarks\n\nintro\n"
    once = acc.replace_block(doc, block)
    assert once.count(acc.BEGIN) == 1 and once.startswith(doc.rstrip("\n"))
    assert acc.replace_block(once, block) == once  # regenerating replaces, never appends twice


def test_error_is_symmetric():
    p = POINTS[0]
    assert acc.Row(p, p["value"] * 2).error == pytest.approx(acc.Row(p, p["value"] / 2).error)
