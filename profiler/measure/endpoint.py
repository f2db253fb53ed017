"""`gpumix profile endpoint`: throughput-table entries measured against a running
OpenAI-compatible server instead of the built-in runtime.

Per bucket, a bounded rate search with the validate load generator: start at `start_rps`,
double while a short run passes (load/verdict.py: >= 95% of the offered rate achieved, >= 99%
of requests within the model's SLO), halve while it fails, then bisect (geometric mean) between
the best passing and the lowest failing rate until `max_steps` runs are spent. max_rps is the
best achieved rate of a passing run (0 with a reason when none passed). Entries have source
"endpoint".

A server that cannot be reached, or that answers no request of the first rate, is an error
naming the endpoint (InputError on --endpoint, exit 2), not a table of max_rps 0: the command
writes nothing then, so the measurements already in --out stay.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from gpumix.planner.errors import InputError
from gpumix.planner.workload import ModelDemand
from gpumix.profiler.load import generator as loadgen
from gpumix.profiler.load.verdict import Criteria


@dataclass(frozen=True)
class SearchOptions:
    duration_s: float = 10.0
    drain_s: float = 5.0
    start_rps: float = 1.0
    max_steps: int = 8
    seed: int = 0


CMD = "gpumix profile endpoint"


def unreachable(where: str, why: str) -> InputError:
    return InputError(CMD, "--endpoint", f"{where}: {why}")


def search_bucket(backend, n_in: int, n_out: int, ttft_ms: float, tpot_ms: float,
                  opts: SearchOptions, progress: Callable[[str], None] = lambda m: None) -> dict:
    steps, best, lo, hi = [], None, None, None  # lo: highest passing rate, hi: lowest failing
    answered = 0  # requests completed over all rates tried
    rate = opts.start_rps
    for k in range(opts.max_steps):
        sched = loadgen.arrivals([(n_in, n_out, rate)], opts.duration_s, opts.seed + k)
        res = loadgen.run([backend], [sched], opts.drain_s, opts.duration_s + opts.drain_s + 5.0)
        m = loadgen.summarize(res.records, [sched], ttft_ms, tpot_ms)
        ok = Criteria().holds(m, rate)
        steps.append({"offered_rps": round(rate, 4), "achieved_rps": m["achieved_rps"],
                      "slo_attainment": m["slo_attainment"], "ttft_ms": m["ttft_ms"],
                      "tpot_ms": m["tpot_ms"], "passed": ok, "errors": m["errors"]})
        progress(f"{n_in}/{n_out} at {rate:.3g} req/s: {'pass' if ok else 'fail'}")
        answered += m["completed"]
        if not answered and m["errors"]:  # not one answer so far: down, or not serving this model
            where = getattr(getattr(backend, "ep", None), "base", "the endpoint")
            raise unreachable(where, f"no request answered ({m['errors'][0]['error']})")
        if res.aborted and m["completed"] == 0:
            break  # the server stopped answering: more rates will not help
        if ok:
            lo = rate
            best = max(best or 0.0, m["achieved_rps"])
        else:
            hi = rate if hi is None else min(hi, rate)
        if hi is None:
            rate *= 2
        elif lo is None:
            rate /= 2
        else:
            if hi / lo < 1.05:
                break
            rate = math.sqrt(lo * hi)
    return {"max_rps": round(best or 0.0, 6), "steps": steps,
            "reason": "" if best else "no tried rate met the SLO"}


def profile_model(backend, m: ModelDemand, gpu: str, tp: int, opts: SearchOptions,
                  progress: Callable[[str], None] = lambda msg: None) -> tuple[list[dict], list[dict]]:
    """(entries, search records) for every bucket of one workload model."""
    entries, records = [], []
    for b in m.buckets:
        found = search_bucket(backend, b.input_tokens, b.output_tokens, m.slo.ttft_ms, m.slo.tpot_ms,
                              opts, lambda msg: progress(f"{m.name} {msg}"))
        e = {"model": m.name, "gpu": gpu, "tp": tp, "input_tokens": b.input_tokens,
             "output_tokens": b.output_tokens, "max_rps": found["max_rps"], "source": "endpoint"}
        if found["reason"]:
            e["reason"] = found["reason"]
        entries.append(e)
        records.append({"model": m.name, "gpu": gpu, "tp": tp, "input_tokens": b.input_tokens,
                        "output_tokens": b.output_tokens, "steps": found["steps"]})
    return entries, records


def profile_endpoint_models(ep, models: list, endpoint_model: str | None, prompt: str, gpu: str, tp: int,
                     opts, progress) -> tuple[list, list]:
    """(entries, rate searches) for each model against a running server."""
    from gpumix.profiler.load.client import AuthError, EndpointBackend, list_models

    try:
        list_models(ep)
    except OSError as e:  # refused, unresolvable, timed out: nothing to measure
        raise unreachable(ep.base, f"cannot connect ({e.strerror or e})") from None
    except AuthError as e:  # every request would be refused the same way
        raise InputError(CMD, "--api-key", f"{ep.base}: {e}") from None
    except ValueError:
        pass  # it answers, without a model list (not every server has GET /v1/models)
    entries, searches = [], []
    for m in models:
        e, s = profile_model(EndpointBackend(ep, endpoint_model or m.name, prompt), m, gpu, tp, opts, progress)
        entries += e
        searches += s
    return entries, searches
