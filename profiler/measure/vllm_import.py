"""Throughput-table entries from `vllm bench serve --save-result` JSON files.

One result file is one run at one request rate. Runs of the same model and request shape (mean
input and output tokens, or the lengths given) form one bucket; its max_rps is the highest
measured request throughput among the runs whose TTFT and TPOT statistic (p99 by default) meet
the SLO. Without an SLO the highest throughput of any run is used, which is what the server
sustains flat out, not under a latency target.

Keys read: model_id, completed, request_throughput, total_input_tokens, total_output_tokens,
request_rate, and `{stat}_ttft_ms` / `{stat}_tpot_ms` for stat in mean, median, p50, p90, p99...
"""
from __future__ import annotations

import json
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


def _number(doc: dict, key: str, path: str, positive: bool = False) -> float:
    v = doc.get(key)
    if isinstance(v, str) and v.strip().lower() == "inf" and key == "request_rate":
        return math.inf
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 \
            or (positive and v <= 0):
        raise InputError(path, key, f"must be a {'positive ' if positive else ''}number, got {v!r}"
                         if key in doc else "missing (is this a `vllm bench serve --save-result` file?)")
    return float(v)


def read_run(path: Path | str, stat: str = "p99", model: str | None = None,
             input_tokens: int | None = None, output_tokens: int | None = None) -> VllmRun:
    path = str(path)
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(path, "", "file not found") from None
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(path, "", f"cannot read JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InputError(path, "", "a vLLM result must be a JSON object")
    name = model or doc.get("model_id")
    if not isinstance(name, str) or not name.strip():
        raise InputError(path, "model_id", "missing: pass --model")
    completed = int(_number(doc, "completed", path, positive=True))
    n_in = input_tokens or round(_number(doc, "total_input_tokens", path, positive=True) / completed)
    n_out = output_tokens or round(_number(doc, "total_output_tokens", path, positive=True) / completed)
    return VllmRun(
        path=path, model=name.strip(),
        request_rate=_number(doc, "request_rate", path) if "request_rate" in doc else math.inf,
        throughput_rps=_number(doc, "request_throughput", path, positive=True),
        ttft_ms=_number(doc, f"{stat}_ttft_ms", path), tpot_ms=_number(doc, f"{stat}_tpot_ms", path),
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
    if ttft_ms is not None:
        return runs, {r.model: (ttft_ms, tpot_ms) for r in runs}
    return runs, None
