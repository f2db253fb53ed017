"""Measurement on hardware, by role: runtime/ (the torch engine, TP, replicas and how a model is
run), measure/ (timed sweeps, fit, calibration, `gpumix profile`, vLLM and endpoint import),
load/ (open-loop load, the HTTP client, the pass/fail criteria), serve/ (`gpumix serve`) and
validate/ (`gpumix validate`). Only runtime/ imports torch, and only when a model is built."""
