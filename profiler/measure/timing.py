"""Timed sweeps of prefill and decode steps on the local device.

Each point is warmed up (not timed), then timed `iters` times with a device sync before each
clock read; the median is kept. The grid is planned without torch (sweep_plan) so the CLI can
size its progress bar and skip points whose KV cache would not fit the memory budget.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gpumix.planner.catalog import ModelShape
from gpumix.profiler.measure.fit import Sample


@dataclass(frozen=True)
class SweepPlan:
    prefill_lens: tuple[int, ...]
    decode: tuple[tuple[int, tuple[int, ...]], ...]  # (batch, contexts that fit at that batch)

    @property
    def points(self) -> int:
        return len(self.prefill_lens) + sum(len(c) for _, c in self.decode)

    def to_dict(self) -> dict:
        return {"prefill_lens": list(self.prefill_lens),
                "decode": [{"batch": b, "contexts": list(c)} for b, c in self.decode]}


def sweep_plan(shape: ModelShape, tp: int, dtype_bytes: int, kv_budget_bytes: float,
               prefill_lens: Sequence[int], batches: Sequence[int], contexts: Sequence[int]) -> SweepPlan:
    """Drop decode points whose KV cache (batch x (context + 1) tokens) exceeds the budget."""
    per_token = shape.kv_bytes_per_token(tp, dtype_bytes)
    decode = []
    for b in sorted(set(batches)):
        fits = tuple(c for c in sorted(set(contexts)) if b * (c + 1) * per_token <= kv_budget_bytes)
        if fits:
            decode.append((b, fits))
    return SweepPlan(tuple(sorted(set(prefill_lens))), tuple(decode))


def sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device, warmup: int = 1, iters: int = 3,
            min_time_s: float = 0.05, max_iters: int = 50,
            agree: Callable[[int], int] = lambda n: n) -> float:
    """Median wall time of fn in ms: warm-up runs skipped, device synced before each clock read;
    at least `iters` runs and, for fast steps, more until about min_time_s has passed.
    agree(n) makes TP ranks run the same number of steps (their collectives must pair up)."""
    for _ in range(warmup):
        fn()
    sync(device)

    def once() -> float:
        t0 = time.perf_counter()
        fn()
        sync(device)
        return time.perf_counter() - t0

    times = [once()]
    n = agree(min(max(iters, math.ceil(min_time_s / max(times[0], 1e-6))), max_iters))
    times += [once() for _ in range(n - 1)]
    times.sort()
    return 1e3 * times[len(times) // 2]


def run_sweep(model, device, plan: SweepPlan, iters: int = 3, rounds: int = 2,
              report: Callable[[object], None] = lambda msg: None,
              agree: Callable[[int], int] = lambda n: n) -> list[Sample]:
    """Time every point of the plan on a built (possibly TP-sharded) model.

    The grid is swept `rounds` times and each point keeps its fastest round: on a shared machine
    a burst of someone else's work slows a few points of one round, rarely the same point twice.
    """
    import torch

    vocab = model.args.vocab
    gen = torch.Generator().manual_seed(0)
    best: dict[tuple[str, int, int], float] = {}

    def keep(key, ms):
        best[key] = min(ms, best.get(key, ms))
        report((*key, ms))

    with torch.inference_mode():
        for _ in range(rounds):
            if plan.prefill_lens:
                model.setup_cache(1, max(plan.prefill_lens))
            for n in plan.prefill_lens:
                tokens = torch.randint(0, vocab, (1, n), generator=gen).to(device)
                pos = torch.arange(n, device=device)[None]
                keep(("prefill", 1, n), time_ms(lambda: model(tokens, pos, last_only=True), device,
                                                iters=iters, agree=agree))
            for b, contexts in plan.decode:
                model.setup_cache(b, max(contexts) + 1)
                tokens = torch.randint(0, vocab, (b, 1), generator=gen).to(device)
                for ctx in contexts:
                    pos = torch.full((b, 1), ctx, device=device)
                    keep(("decode", b, ctx), time_ms(lambda: model(tokens, pos), device, iters=iters,
                                                                 agree=agree))
        model.setup_cache(1, 1)  # give the sweep's cache back
    return [Sample(kind, b, t, ms) for (kind, b, t), ms in best.items()]


def copy_bandwidth_gbps(device, nbytes: int = 1 << 29, iters: int = 5) -> float:
    """Device memory-copy bandwidth, STREAM convention: bytes read + bytes written per second."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, warmup=2, iters=iters)
    return 2 * nbytes / (ms * 1e-3) / 1e9


def matmul_tflops(device, dtype, n: int = 2048, iters: int = 5) -> float:
    """Dense n x n GEMM throughput in the given dtype (the compute roof the calibration uses)."""
    import torch

    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    ms = time_ms(lambda: a @ b, device, warmup=2, iters=iters)
    return 2 * n ** 3 / (ms * 1e-3) / 1e12
