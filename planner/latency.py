"""Latency at a concurrency: what one replica's clients see with N requests in flight.

`gpumix estimate --concurrency N[,N...]` writes one entry per model x GPU x TP x bucket x
concurrency x precision (docs/formats.md, "Latency table"): TTFT, TPOT, output tokens/s, weights
and KV cache per GPU, and whether it fits. Configurations that cannot run at all (TP does not
split the heads or exceeds a node; no kernel for the precision on that GPU) have no entry; the
caller gets them as notes. The numbers are the roofline's (planner/roofline.at_concurrency).
"""
from __future__ import annotations

from gpumix.planner.capacity import CapacityReport, gpu_offers
from gpumix.planner.catalog import Catalog, norm_name
from gpumix.planner.precision import unsupported
from gpumix.planner.roofline import Efficiency, at_concurrency, tp_allowed
from gpumix.planner.workload import Workload


def latency_table(workload: Workload, catalog: Catalog, concurrency: tuple[int, ...],
                  generator: str) -> tuple[dict, list[str]]:
    """({"entries": [...], "generator": ...}, notes on the configurations left out)."""
    entries, skipped = [], []
    offers = gpu_offers(workload, catalog, None, CapacityReport())
    for m in workload.models:
        if m.shape is None:
            skipped.append(f"{m.name}: no model shape (a config.json or catalog name is needed)")
            continue
        allowed = None if m.gpus is None else {norm_name(catalog.gpu(g).name if catalog.gpu(g) else g)
                                               for g in m.gpus}
        for offer in offers:
            if offer.spec is None or (allowed is not None and norm_name(offer.name) not in allowed):
                continue
            eff = Efficiency.from_dict(catalog.gpu_efficiency(offer.name))
            for tp in m.tp or workload.tp_degrees:
                for prec in m.precisions:
                    why = tp_allowed(m.shape, offer.spec, tp) or unsupported(prec, offer.spec)
                    if why:
                        skipped.append(f"{m.name} on {offer.name} TP{tp} {prec.label}: {why}")
                        continue
                    for b in m.buckets:
                        for n in concurrency:
                            lat = at_concurrency(m.shape, offer.spec, tp, b.input_tokens, b.output_tokens, n,
                                                 eff, prec)
                            entries.append(_entry(m.name, offer.name, tp, b.key, prec, lat))
    return {"entries": entries, "generator": generator}, skipped


def _entry(model: str, gpu: str, tp: int, bucket: tuple[int, int], prec, lat) -> dict:
    entry = {
        "model": model, "gpu": gpu, "tp": tp, "input_tokens": bucket[0], "output_tokens": bucket[1],
        "concurrency": lat.concurrency, "quantization": prec.quantization, "kv_cache_dtype": prec.kv_cache_dtype,
        "ttft_ms": round(lat.ttft_ms, 3), "tpot_ms": round(lat.tpot_ms, 3),
        "output_tokens_per_s": round(lat.output_tokens_per_s, 3),
        "weights_gb_per_gpu": round(lat.weights_gb_per_gpu, 3),
        "kv_cache_tokens": lat.kv_cache_tokens, "fits": lat.fits, "batch": lat.batch,
    }
    if lat.reason:
        entry["reason"] = lat.reason
    return entry
