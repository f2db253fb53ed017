"""Latency model fitted to measured step times, and its held-out prediction error.

  prefill_ms(n)      = a + b n + c n^2        one request's prompt of n tokens (weights, GEMMs, attention)
  decode_ms(B, ctx)  = a + b B + c B ctx      one step of B requests at mean context ctx
                                              (weights and overhead, per-token GEMMs, KV reads)

Least squares on relative error (each row divided by its measurement) with every coefficient
kept >= 0, so the model never predicts faster steps for more work. numpy only.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Sample:
    kind: str  # "prefill" or "decode"
    batch: int  # requests in the step (prefill: 1)
    tokens: int  # prefill: prompt length; decode: context length (tokens already in the cache)
    ms: float  # median step time

    def to_dict(self) -> dict:
        return {"kind": self.kind, "batch": self.batch, "tokens": self.tokens, "ms": self.ms}

    @classmethod
    def from_dict(cls, d: dict) -> "Sample":
        return cls(str(d["kind"]), int(d["batch"]), int(d["tokens"]), float(d["ms"]))


def _features(kind: str, batch, tokens) -> np.ndarray:
    b, t = np.asarray(batch, float), np.asarray(tokens, float)
    if kind == "prefill":
        return np.stack([np.ones_like(t), t, t * t], axis=-1)
    return np.stack([np.ones_like(b), b, b * t], axis=-1)


def nonneg_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """min ||x w - y|| with w >= 0: the best unconstrained fit over every subset of columns (3 here)."""
    best, best_res = np.zeros(x.shape[1]), np.inf
    for k in range(1, x.shape[1] + 1):
        for cols in itertools.combinations(range(x.shape[1]), k):
            w, *_ = np.linalg.lstsq(x[:, cols], y, rcond=None)
            if (w < 0).any():
                continue
            res = float(np.sum((x[:, cols] @ w - y) ** 2))
            if res < best_res:
                best_res, best = res, np.zeros(x.shape[1])
                best[list(cols)] = w
    return best


@dataclass(frozen=True)
class LatencyModel:
    prefill: tuple[float, float, float]
    decode: tuple[float, float, float]

    def prefill_ms(self, n: float) -> float:
        return float(_features("prefill", 1, n) @ np.asarray(self.prefill))

    def decode_ms(self, batch: float, context: float) -> float:
        return float(_features("decode", batch, context) @ np.asarray(self.decode))

    def predict(self, s: Sample) -> float:
        return self.prefill_ms(s.tokens) if s.kind == "prefill" else self.decode_ms(s.batch, s.tokens)

    def to_dict(self) -> dict:
        return {"prefill_ms": {"formula": "a + b*n + c*n^2", "a": self.prefill[0], "b": self.prefill[1],
                               "c": self.prefill[2]},
                "decode_ms": {"formula": "a + b*B + c*B*ctx", "a": self.decode[0], "b": self.decode[1],
                              "c": self.decode[2]}}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyModel":
        p, q = d["prefill_ms"], d["decode_ms"]
        return cls((p["a"], p["b"], p["c"]), (q["a"], q["b"], q["c"]))


def _fit_kind(samples: Sequence[Sample], kind: str) -> tuple[float, float, float]:
    rows = [s for s in samples if s.kind == kind]
    if not rows:
        raise ValueError(f"no {kind} measurements to fit")
    y = np.array([s.ms for s in rows])
    x = _features(kind, [s.batch for s in rows], [s.tokens for s in rows])
    w = nonneg_lstsq(x / y[:, None], np.ones_like(y))  # relative residuals
    return tuple(float(v) for v in w)


def fit(samples: Sequence[Sample]) -> LatencyModel:
    return LatencyModel(_fit_kind(samples, "prefill"), _fit_kind(samples, "decode"))


def errors(model: LatencyModel, samples: Sequence[Sample]) -> np.ndarray:
    """|predicted / measured - 1| per sample."""
    return np.array([abs(model.predict(s) / s.ms - 1) for s in samples])


def holdout_error(samples: Sequence[Sample], test_fraction: float = 0.3, seed: int = 0,
                  repeats: int = 20) -> dict:
    """Fit on a random part of the grid, predict the rest; median and p90 of |relative error|
    pooled over `repeats` random splits (each kind split separately so both stay fitted)."""
    rng = np.random.default_rng(seed)
    errs: list[float] = []
    for _ in range(repeats):
        train, test = [], []
        for kind in ("prefill", "decode"):
            rows = [s for s in samples if s.kind == kind]
            order = rng.permutation(len(rows))
            n_test = min(max(1, round(test_fraction * len(rows))), len(rows) - 3)
            if n_test < 1:
                train += rows
                continue
            test += [rows[i] for i in order[:n_test]]
            train += [rows[i] for i in order[n_test:]]
        if test:
            errs.extend(errors(fit(train), test))
    if not errs:
        return {"median": None, "p90": None, "points": 0}
    e = np.array(errs)
    return {"median": float(np.median(e)), "p90": float(np.percentile(e, 90)), "points": len(e),
            "splits": repeats, "test_fraction": test_fraction}
