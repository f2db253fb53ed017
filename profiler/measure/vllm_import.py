"""Throughput-table entries from `vllm bench serve --save-result` JSON files.

One result file is one run at one request rate. Runs of the same model and request shape (mean
input and output tokens, or the lengths given) form one bucket; its max_rps is the highest
measured request throughput among the runs whose TTFT and TPOT statistic (p99 by default) meet
the SLO. Without an SLO the highest throughput of any run is used, which is what the server
sustains flat out, not under a latency target.

Keys read: model_id, completed, failed, request_throughput, total_input_tokens, total_output_tokens,
request_rate, and `{stat}_ttft_ms` / `{stat}_tpot_ms` for stat in mean, median, p50, p90, p99...
A file is one JSON object, or one per line (`--append-result`). Runs with failed requests are left
out with a note. A model_id the catalog lists as an alias (a Hugging Face id) becomes its catalog
name, so the entries plan without --model or --workload.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from gpumix.planner.errors import InputError


@dataclass(frozen=True)
class VllmRun:
    path: str
    model: str
    request_rate: float  # inf for a burst run
    throughput_rps: float
    ttft_ms: float
    tpot_ms: float
    input_tokens: int
    output_tokens: int
    completed: int


MAX_COUNT = 10**12  # requests and tokens of one run: far above any benchmark, far below float range


def _number(doc: dict, key: str, where: str, positive: bool = False) -> float:
    v = doc.get(key)
    if isinstance(v, str) and v.strip().lower() == "inf" and key == "request_rate":
        return math.inf
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_COUNT:
        raise InputError(where, key, f"must be at most {MAX_COUNT:g}, got a {len(str(abs(v)))}-digit integer")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
            or (positive and v <= 0):
        raise InputError(where, key, f"must be a finite {'positive' if positive else 'non-negative'} number, "
                                     f"got {_show(v)}"
                         if key in doc else "missing (is this a `vllm bench serve --save-result` file?)")
    return float(v)


def _count(doc: dict, key: str, where: str, positive: bool = False) -> int:
    """A request or token count: an integer (vLLM writes ints; 3.0 is taken as 3)."""
    v = _number(doc, key, where, positive)
    if not float(v).is_integer() or v > MAX_COUNT:
        raise InputError(where, key, f"must be a whole number of at most {MAX_COUNT:g}, got {_show(doc.get(key))}")
    return int(v)


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 100 else text[:97] + "..."


def _documents(path: str) -> list[tuple[str, object]]:
    """(where, JSON value) of one result file: one JSON document, or one per line (vLLM's
    --append-result writes a JSON object per run on its own line). Read through the planner's
    bounded reader (planner/reading.py: size, UTF-8, depth, long integers, non-finite numbers)."""
    from gpumix.planner.reading import decode, parse_json, read_bytes

    text = decode(read_bytes(path, "file"), path)
    try:
        return [(path, parse_json(text, path))]
    except InputError as whole:
        lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
        if len(lines) < 2 or not whole.message.startswith("malformed JSON"):
            raise
    return [(f"{path}: line {i}", parse_json(ln, f"{path}: line {i}")) for i, ln in lines]


def read_runs(path: Path | str, stat: str = "p99", model: str | None = None,
              input_tokens: int | None = None, output_tokens: int | None = None,
              notes: list[str] | None = None) -> list[VllmRun]:
    """Every run of one result file (a JSON object, or JSONL from --append-result). Runs with
    failed requests are left out with a note: their throughput is not what the server sustains."""
    runs = []
    for where, doc in _documents(str(path)):
        run = _run(where, doc, stat, model, input_tokens, output_tokens)
        failed = _count(doc, "failed", where) if doc.get("failed") is not None else 0
        if failed:
            if notes is not None:
                notes.append(f"{where}: {failed} of {failed + run.completed} requests failed; run left out "
                             "(fix the server or the load and run it again)")
            continue
        runs.append(run)
    return runs


def _run(where: str, doc, stat: str, model: str | None, input_tokens: int | None,
         output_tokens: int | None) -> VllmRun:
    if not isinstance(doc, dict):
        raise InputError(where, "", "a vLLM result must be a JSON object")
    name = model or doc.get("model_id")
    if not isinstance(name, str) or not name.strip():
        raise InputError(where, "model_id", "missing: pass --model")
    from gpumix.planner.reading import name_problem

    if name_problem(name):  # the planner's character set, or the table would not plan
        raise InputError(where, "--model" if model else "model_id",
                         f"not a model name: {_show(name)}, {name_problem(name)}" + ("" if model else " (pass --model)"))
    completed = _count(doc, "completed", where, positive=True)
    n_in = input_tokens or round(_count(doc, "total_input_tokens", where, positive=True) / completed)
    n_out = output_tokens or round(_count(doc, "total_output_tokens", where, positive=True) / completed)
    return VllmRun(
        path=where, model=name.strip(),
        request_rate=_number(doc, "request_rate", where) if "request_rate" in doc else math.inf,
        throughput_rps=_number(doc, "request_throughput", where, positive=True),
        ttft_ms=_number(doc, f"{stat}_ttft_ms", where), tpot_ms=_number(doc, f"{stat}_tpot_ms", where),
        input_tokens=max(1, n_in), output_tokens=max(1, n_out), completed=completed)


def entries(runs: Sequence[VllmRun], gpu: str, tp: int,
            slo: dict[str, tuple[float, float]] | None) -> tuple[list[dict], list[str]]:
    """One entry per (model, bucket); slo maps a model name to (ttft_ms, tpot_ms), None = no SLO."""
    groups: dict[tuple[str, int, int], list[VllmRun]] = {}
    for r in runs:
        groups.setdefault((r.model, r.input_tokens, r.output_tokens), []).append(r)
    out, notes = [], []
    for (model, n_in, n_out), group in groups.items():
        target = None if slo is None else slo.get(model)
        ok = group if target is None else [r for r in group if r.ttft_ms <= target[0] and r.tpot_ms <= target[1]]
        if target is None:
            notes.append(f"{model} {n_in}/{n_out}: no SLO given, max_rps is the best throughput of "
                         f"{len(group)} run(s) regardless of latency")
        best = max(ok, key=lambda r: r.throughput_rps) if ok else None
        e = {"model": model, "gpu": gpu, "tp": tp, "input_tokens": n_in, "output_tokens": n_out,
             "max_rps": round(best.throughput_rps, 6) if best else 0.0, "source": "vllm",
             "runs": len(group)}
        if best is None:
            e["reason"] = (f"none of {len(group)} run(s) met TTFT {target[0]:g} ms and TPOT "
                           f"{target[1]:g} ms")
            notes.append(f"{model} {n_in}/{n_out}: {e['reason']}")
        out.append(e)
    return out, notes


def provenance(runs: Sequence[VllmRun], stat: str) -> list[dict]:
    return [{**asdict(r), "request_rate": None if math.isinf(r.request_rate) else r.request_rate,
             "stat": stat} for r in runs]


def runs_and_slos(runs: list, workload: Path | None, ttft_ms, tpot_ms, catalog) -> tuple[list, dict | None]:
    """The runs named as the workload names its models, and {model: (TTFT ms, TPOT ms)} from the
    workload or from --ttft-ms/--tpot-ms (None: neither)."""
    from gpumix.planner.catalog import norm_name
    from gpumix.planner.workload import load_workload

    if workload is not None:
        wl = load_workload(workload, catalog, need_shapes=False)
        names = {norm_name(m.name): m for m in wl.models}

        def canonical(name: str) -> str:
            shape = catalog.model(name)
            m = names.get(norm_name(name)) or (names.get(norm_name(shape.name)) if shape else None)
            return m.name if m else name
        runs = [replace(r, model=canonical(r.model)) for r in runs]
        return runs, {m.name: (m.slo.ttft_ms, m.slo.tpot_ms) for m in wl.models}
    runs = [replace(r, model=catalog_name(r.model, catalog)) for r in runs]
    if ttft_ms is not None:
        return runs, {r.model: (ttft_ms, tpot_ms) for r in runs}
    return runs, None


def catalog_name(name: str, catalog) -> str:
    """The catalog's name for a model id it lists as an alias (vLLM's model_id is the Hugging Face
    id, `meta-llama/Llama-3.1-8B-Instruct`; the planner names it `llama-3.1-8b`), else the id."""
    shape = catalog.model(name)
    return shape.name if shape else name
