"""How far gpumix's capacity model lands from published serving numbers and from NVIDIA AIConfigurator.

  python bench/accuracy.py [--points bench/accuracy_points.json] [--doc docs/benchmarks.md] [--no-write]

For every point of bench/accuracy_points.json (a measured or AIC-estimated TTFT, TPOT, output
tokens/s or KV cache size for one model x GPU x TP x precision x lengths x concurrency) it asks
gpumix's roofline `at_concurrency` for the same setup and takes ratio = gpumix / reference. The
error of a point is max(ratio, 1 / ratio), so x1.25 means 25% off either way; the summary gives the
median and the worst error (target: median <= x1.2, worst <= x1.6) and the median ratio (its bias).
It rewrites the table between `<!-- accuracy:begin -->` and `<!-- accuracy:end -->` in the doc and
prints the summary as JSON. Nothing is tuned here: the efficiency factors are the catalog's.

A point with concurrency null is a max-load throughput (trtllm-bench queues every request at once);
gpumix is then asked at MAX_LOAD, so its own KV-cache and max_batch limits set the batch.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from gpumix.planner.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[1]
POINTS = ROOT / "bench" / "accuracy_points.json"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- accuracy:begin -->", "<!-- accuracy:end -->"
METRICS = {"tpot_ms": "ms", "ttft_ms": "ms", "output_tokens_per_s": "tok/s", "kv_cache_tokens": "tokens"}
QUANTIZATIONS = ("none", "fp8", "int8", "awq", "gptq")
KV_CACHE_DTYPES = ("auto", "fp8")
PUBLISHED_STACKS = ("vllm", "sglang", "trtllm", "nim")
AIC = "aiconfigurator"
MAX_LOAD = 4096  # concurrency gpumix is asked at for a max-load point: more than any KV cache here holds
TARGET_MEDIAN, TARGET_WORST = 1.2, 1.6
# Catalog names added in parallel (issue 13): a point may name one before its catalog entry lands; it is
# then listed, not compared.
PENDING_MODELS = ("deepseek-v3", "qwen3-8b", "qwen3-32b", "qwen3-30b-a3b", "qwen3-235b-a22b", "llama-3.3-70b")
# Models whose shape is another catalog entry's: Llama 3.3 70B is Llama 3.1 70B's architecture retrained.
SAME_SHAPE = {"llama-3.3-70b": "llama-3.1-70b"}


@dataclass(frozen=True)
class Row:
    point: dict
    gpumix: float | None  # None: not compared (see why)
    why: str = ""  # why not compared, or what gpumix flagged (e.g. the KV cache holds fewer than N)

    @property
    def ratio(self) -> float | None:
        return None if self.gpumix is None else self.gpumix / self.point["value"]

    @property
    def error(self) -> float | None:
        r = self.ratio
        return None if r is None else max(r, 1 / r)


def load_points(path: Path = POINTS) -> list[dict]:
    return json.loads(path.read_text())["points"]


def resolve_model(catalog, name: str):
    """(shape, note): the catalog's shape for `name`, or a same-shape stand-in while it is pending."""
    shape = catalog.model(name)
    if shape is None and name in SAME_SHAPE:
        return catalog.model(SAME_SHAPE[name]), f"shape of {SAME_SHAPE[name]}"
    return shape, ""


def compare(point: dict, catalog) -> Row:
    """gpumix's value for one point's setup."""
    # The capacity model's concurrency API (issue 13): imported here so the table builder and the
    # points check run on a gpumix without it.
    from gpumix.planner.precision import Precision
    from gpumix.planner.roofline import Efficiency, at_concurrency

    shape, note = resolve_model(catalog, point["model"])
    gpu = catalog.gpu(point["gpu"])
    if shape is None or gpu is None:
        missing = point["model"] if shape is None else point["gpu"]
        return Row(point, None, f"pending: {missing} is not in the catalog yet")
    eff = Efficiency.from_dict(catalog.gpu_efficiency(gpu.name))
    concurrency = point["concurrency"] or MAX_LOAD
    lat = at_concurrency(shape, gpu, point["tp"], point["input_tokens"], point["output_tokens"], concurrency,
                         eff, Precision(point["quantization"], point["kv_cache_dtype"]))
    value = {"tpot_ms": lat.tpot_ms, "ttft_ms": lat.ttft_ms, "output_tokens_per_s": lat.output_tokens_per_s,
             "kv_cache_tokens": lat.kv_cache_tokens}[point["metric"]]
    seq = point["input_tokens"] + point["output_tokens"]
    if point["metric"] != "kv_cache_tokens" and lat.kv_cache_tokens < seq:
        return Row(point, None, f"gpumix: {getattr(lat, 'reason', '') or 'does not fit'}")
    flags = [note] if note else []
    if point["concurrency"] is None:
        flags.append(f"gpumix batch {lat.batch}")
    elif not lat.fits and point["metric"] != "kv_cache_tokens":
        flags.append(f"gpumix: {getattr(lat, 'reason', '') or 'does not fit'}")
    if not math.isfinite(value) or value <= 0:
        return Row(point, None, "; ".join(flags + ["gpumix gave no finite value"]))
    return Row(point, float(value), "; ".join(flags))


def _errors(rows: list[Row]) -> dict:
    done = [r for r in rows if r.ratio is not None]
    if not done:
        return {"n": 0}
    worst = max(done, key=lambda r: r.error)
    return {"n": len(done), "median_error": round(statistics.median(r.error for r in done), 3),
            "worst_error": round(worst.error, 3), "worst_id": worst.point["id"],
            "median_ratio": round(statistics.median(r.ratio for r in done), 3)}


def summarize(rows: list[Row]) -> dict:
    """Median and worst error (max(r, 1/r)) and median ratio: all points, published, AIC, per metric."""
    published = [r for r in rows if r.point["stack"] != AIC]
    out = {"all": _errors(rows), "published": _errors(published),
           "aiconfigurator": _errors([r for r in rows if r.point["stack"] == AIC]),
           "by_metric": {m: _errors([r for r in published if r.point["metric"] == m]) for m in METRICS},
           "not_compared": [r.point["id"] for r in rows if r.ratio is None]}
    out["target_met"] = _met(out["all"])
    out["published_target_met"] = _met(out["published"])
    return out


def _met(e: dict) -> bool:
    return bool(e["n"]) and e["median_error"] <= TARGET_MEDIAN and e["worst_error"] <= TARGET_WORST


def _setup(p: dict) -> str:
    prec = "bf16" if p["quantization"] == "none" else p["quantization"]
    if p["kv_cache_dtype"] != "auto":
        prec += f"+kv:{p['kv_cache_dtype']}"
    conc = "max load" if p["concurrency"] is None else f"c={p['concurrency']}"
    lengths = "" if p["metric"] == "kv_cache_tokens" else f", {p['input_tokens']}/{p['output_tokens']}, {conc}"
    return f"{p['model']}, {p['gpu']} TP{p['tp']} {prec}{lengths}"


def _short_source(p: dict) -> str:
    """The source's first clause, cut to fit a table cell; the points file has the full text and quote."""
    text = p["source"].split(";")[0].split(" (")[0].replace("https://", "")
    return f"{p['stack']}: {text[:60]}{'...' if len(text) > 60 else ''}"


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _line(name: str, e: dict) -> str:
    if not e["n"]:
        return f"| {name} | 0 | | | |"
    return (f"| {name} | {e['n']} | {e['median_ratio']:.2f} | x{e['median_error']:.2f} "
            f"| x{e['worst_error']:.2f} ({e['worst_id']}) |")


def build_table(rows: list[Row], summary: dict, provenance: str) -> str:
    """The markdown block between the accuracy markers: summary, per-metric errors, one row per point."""
    def verdict(key: str, e: dict) -> str:
        said = "met" if summary[key] else "not met"
        return f"**{said}**" + (f" (median x{e['median_error']:.2f}, worst x{e['worst_error']:.2f})" if e["n"] else "")

    lines = [BEGIN, "", f"_Generated by `python bench/accuracy.py` ({provenance}); do not edit by hand._", "",
             f"Target: median error <= x{TARGET_MEDIAN}, worst <= x{TARGET_WORST} (error = max(r, 1/r), "
             f"r = gpumix / reference). All points: {verdict('target_met', summary['all'])}; published "
             f"measurements only: {verdict('published_target_met', summary['published'])}.", "",
             "| points | n | median ratio | median error | worst error |", "|---|---|---|---|---|",
             _line("all", summary["all"]), _line("published", summary["published"]),
             _line("AIConfigurator", summary["aiconfigurator"]),
             *(_line(f"published, {m}", e) for m, e in summary["by_metric"].items()), "",
             "| id | source | setup | reference | gpumix | gpumix/ref | notes |", "|---|---|---|---|---|---|---|"]
    order = {s: i for i, s in enumerate((*PUBLISHED_STACKS, AIC))}
    for r in sorted(rows, key=lambda r: (order.get(r.point["stack"], 99), r.point["metric"], r.point["id"])):
        p, unit = r.point, METRICS[r.point["metric"]]
        mine = "-" if r.gpumix is None else f"{_num(r.gpumix)} {unit}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}"
        lines.append(f"| {p['id']} | {_short_source(p)} | {_setup(p)} | {_num(p['value'])} {unit} | {mine} "
                     f"| {ratio} | {r.why} |")
    return "\n".join([*lines, "", END])


def replace_block(text: str, block: str) -> str:
    """`text` with the span from BEGIN to END replaced by `block`, or `block` appended if absent."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < start:
        return text.rstrip("\n") + "\n\n" + block + "\n"
    return text[:start] + block + text[stop + len(END):]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=Path, default=POINTS)
    ap.add_argument("--doc", type=Path, default=DOC)
    ap.add_argument("--no-write", action="store_true", help="print the summary, leave the doc alone")
    ap.add_argument("--provenance", default="gpumix at this commit",
                    help="what produced the gpumix column, for the table's first line")
    args = ap.parse_args()
    catalog = load_catalog()
    rows = [compare(p, catalog) for p in load_points(args.points)]
    summary = summarize(rows)
    if not args.no_write:
        args.doc.write_text(replace_block(args.doc.read_text(), build_table(rows, summary, args.provenance)))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
