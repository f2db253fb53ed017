"""Small hand-made problems in the planner's own data model."""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import strategies as st

from gpumix.planner.problem import Config, Problem


def make_problem(demand: dict, capacity: dict, price: dict, available: dict | None = None,
                 max_utilization: float = 1.0) -> Problem:
    """demand: {(model, (in, out)): rps}; capacity: {(model, gpu, tp): {(in, out): max_rps}}."""
    models = tuple(dict.fromkeys(m for m, _ in demand))
    buckets = {m: tuple(k for mm, k in demand if mm == m) for m in models}
    caps_of = {Config(*c): caps for c, caps in capacity.items()}
    configs = tuple(sorted(c for c, caps in caps_of.items() if any(v > 0 for v in caps.values())))
    return Problem(
        models=models,
        buckets=buckets,
        demand=dict(demand),
        configs=configs,
        capacity={c: {k: v for k, v in caps_of[c].items() if v > 0} for c in configs},
        price=dict(price),
        available={g: (available or {}).get(g) for g in price},
        max_utilization=max_utilization,
    )


# A Llama-shaped config.json small enough for CPU tests of the runtime, profiler and server.
TINY_CONFIG = {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
               "num_hidden_layers": 2, "vocab_size": 128}

# The SkyPilot catalog snapshot the ecosystem tests read, and the one model they all plan first.
SKYPILOT_CSV = Path(__file__).parent / "fixtures" / "skypilot-vms.csv"
LLAMA_8B_WORKLOAD = """
models:
  - name: llama-3.1-8b
    rate_rps: 6
    slo: {ttft_ms: 1000, tpot_ms: 60}
    buckets: [{input_tokens: 256, output_tokens: 128, share: 0.7}, {input_tokens: 2048, output_tokens: 256, share: 0.3}]
"""


def tiny_profile_args(gpu: str) -> list[str]:
    """`gpumix profile` options for a seconds-long CPU sweep of a tiny model, entries named `gpu`."""
    return ["--gpu-name", gpu, "--prefill-lens", "16,48,96", "--batches", "1,4,16", "--contexts", "32,128",
            "--iters", "2", "--rounds", "1", "--dtype", "fp32", "--threads", "1", "-q"]


def paths(doc, prefix=()):
    """Every path into a JSON document, containers included."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, (*prefix, i))


@st.composite
def mutated_doc(draw, good, hostile):
    """A copy of `good` with one to three fields replaced by a value of `hostile` or deleted."""
    doc = json.loads(json.dumps(good))
    for _ in range(draw(st.integers(1, 3))):
        options = list(paths(doc))[1:]
        if not options:
            break
        at = draw(st.sampled_from(options))
        parent = doc
        for k in at[:-1]:
            parent = parent[k]
        if draw(st.booleans()) or isinstance(parent, list):
            parent[at[-1]] = draw(hostile)
        else:
            parent.pop(at[-1])
    return doc
