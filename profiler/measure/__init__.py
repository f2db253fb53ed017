"""Measurement: timed sweeps, the latency fit, calibration, `gpumix profile`, vLLM and endpoint import."""
