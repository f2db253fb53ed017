"""Capacity sources: the analytic roofline estimate (no torch); measurement comes with the runtime."""
