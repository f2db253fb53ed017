"""Throughput tables (`plan --profiles`): max requests/s of one replica per model x GPU x TP x bucket.

Contract: {"entries": [{"model", "gpu", "tp", "input_tokens", "output_tokens", "max_rps"}]}.
Optional per entry: "source" (default "measured"), "quantization" (default "none") and
"kv_cache_dtype" (default "auto"): the precision it was measured at, which is the only one it sizes. Other top-level keys are kept by writers
(provenance, fitted models) and ignored here, except the fitted decode step of `gpumix profile`
(`profiles[].fit.decode_ms`), which decode_step_fits() reads for the sharing latency condition.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gpumix.planner.errors import InputError
from gpumix.planner.precision import DEFAULT, KV_CACHE_DTYPES, QUANTIZATIONS
from gpumix.planner.reading import name_problem, quote
from gpumix.planner.workload import _Reader, read_structured


@dataclass(frozen=True)
class ProfileEntry:
    model: str
    gpu: str
    tp: int
    input_tokens: int
    output_tokens: int
    max_rps: float
    source: str = "measured"
    quantization: str = "none"
    kv_cache_dtype: str = "auto"


def load_profiles(path: Path | str) -> tuple[ProfileEntry, ...]:
    """Read and validate a throughput table. Names are compared as catalog.norm_name compares them,
    so `m-a` and `M_A` for one configuration are a duplicate, refused naming both entries."""
    from gpumix.planner.catalog import norm_name

    r = _Reader(str(path))
    doc = read_structured(Path(path), "profiles")
    if not isinstance(doc, dict):
        r.fail("", "a throughput table must be a mapping with an `entries` list")
    raw = r.get(doc, "entries", "")
    if not isinstance(raw, list):
        r.fail("entries", "must be a list")
    out: list[ProfileEntry] = []
    seen: dict[tuple, int] = {}  # normalised configuration and bucket -> index of its entry
    for i, e in enumerate(raw):
        w = f"entries[{i}]"
        model, gpu = r.name(e, "model", w), r.name(e, "gpu", w)
        source = r.get(e, "source", w, required=False) or "measured"
        if not isinstance(source, str) or name_problem(source):
            r.fail(f"{w}.source", f"must be a short string without control characters, got {quote(source)}")
        entry = ProfileEntry(
            model=model.strip(),
            gpu=gpu.strip(),
            tp=r.integer(e, "tp", w, bound="tp"),
            input_tokens=r.integer(e, "input_tokens", w, bound="tokens"),
            output_tokens=r.integer(e, "output_tokens", w, bound="tokens"),
            max_rps=float(r.number(e, "max_rps", w, positive=False, minimum=0, bound="max_rps")),
            source=source,
            quantization=_choice(r, e, "quantization", w, QUANTIZATIONS, "none"),
            kv_cache_dtype=_choice(r, e, "kv_cache_dtype", w, KV_CACHE_DTYPES, "auto"),
        )
        key = (norm_name(entry.model), norm_name(entry.gpu), entry.tp, entry.input_tokens,
               entry.output_tokens, entry.quantization, entry.kv_cache_dtype)
        if key in seen:
            first = out[seen[key]]
            raise InputError(str(path), w, f"duplicate of entries[{seen[key]}]: model {quote(entry.model)} "
                             f"and {quote(first.model)}, gpu {quote(entry.gpu)} and {quote(first.gpu)} name "
                             "the same configuration, bucket and precision")
        seen[key] = len(out)
        out.append(entry)
    return tuple(out)


def _choice(r: _Reader, e: dict, key: str, where: str, allowed: tuple[str, ...], default: str) -> str:
    value = r.get(e, key, where, required=False)
    if value is None:
        return default
    if not isinstance(value, str) or value not in allowed:
        r.fail(f"{where}.{key}", f"must be one of {', '.join(allowed)}, got {quote(value)}")
    return value


def decode_step_fits(path: Path | str) -> dict[tuple[str, str, int], tuple[float, float, float]]:
    """{(model, gpu, tp) normalised: (a, b, c)} of decode step = a + b B + c B ctx milliseconds, from
    a `gpumix profile` file's `profiles[].fit.decode_ms`; entries without a well-formed fit are
    skipped (the roofline then stands in)."""
    from gpumix.planner.catalog import norm_name

    doc = read_structured(Path(path), "profiles")
    out = {}
    for p in (doc.get("profiles") or []) if isinstance(doc, dict) else []:
        fit = ((p.get("fit") or {}).get("decode_ms") or {}) if isinstance(p, dict) else {}
        coef = [fit.get(k) for k in ("a", "b", "c")]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in coef) and \
                isinstance(p.get("model"), str) and isinstance(p.get("gpu"), str) and isinstance(p.get("tp"), int):
            out[(norm_name(p["model"]), norm_name(p["gpu"]), p["tp"])] = tuple(float(v) for v in coef)
    return out


def throughput_table(problem, generator: str) -> dict:
    """A problem's capacities as a throughput table (the format load_profiles reads), e.g. the
    roofline estimates `gpumix estimate` writes for people to edit."""
    entries = [{"model": c.model, "gpu": c.gpu, "tp": c.tp, "input_tokens": k[0], "output_tokens": k[1],
                "max_rps": mu, "source": problem.source[(c, k)],
                **({} if c.precision == DEFAULT else {"quantization": c.quantization,
                                                      "kv_cache_dtype": c.kv_cache_dtype})}
               for c in problem.configs for k, mu in problem.capacity[c].items()]
    return {"entries": entries, "generator": generator}
