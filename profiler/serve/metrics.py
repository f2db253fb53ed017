"""/metrics: Prometheus text from the server's own CollectorRegistry, under vLLM's metric names and
labels (vllm/v1/metrics/loggers.py: `model_name`, `engine`), so a vLLM dashboard reads a `gpumix
serve` unchanged. The request-level figures are measured where a client would see them begin: TTFT
from the request's arrival at the server to its first token, TPOT = (last - first token) /
(tokens - 1), inter-token latency every gap, e2e arrival to last token. running = requests with a
first token and no last one, waiting = requests admitted with no token yet (the server's view of
the engine's queues).
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# vLLM's buckets for the same histograms
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
TPOT_BUCKETS = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                40.0, 80.0]
E2E_BUCKETS = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
               480.0, 960.0, 1920.0, 7680.0]
LABELS = ["model_name", "engine"]


class Metrics:
    def __init__(self, models: list[str]):
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                             LABELS, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                             LABELS, registry=r)
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", LABELS, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Number of generation tokens processed.",
                                         LABELS, registry=r)
        self.success = Counter("vllm:request_success", "Count of successfully processed requests.",
                               LABELS + ["finished_reason"], registry=r)
        self.ttft = Histogram("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.",
                              LABELS, buckets=TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("vllm:time_per_output_token_seconds",
                              "Histogram of time per output token in seconds.", LABELS, buckets=TPOT_BUCKETS,
                              registry=r)
        self.itl = Histogram("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.",
                             LABELS, buckets=TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.",
                             LABELS, buckets=E2E_BUCKETS, registry=r)
        self.models = {m: ModelMetrics(self, m) for m in models}


class ModelMetrics:
    """One served model's series, labels bound once (observations happen per token)."""

    def __init__(self, m: Metrics, model: str):
        lab = (model, "0")
        self.running, self.waiting = m.running.labels(*lab), m.waiting.labels(*lab)
        self.prompt_tokens, self.generation_tokens = m.prompt_tokens.labels(*lab), m.generation_tokens.labels(*lab)
        self.success_length = m.success.labels(*lab, "length")
        self.success_abort = m.success.labels(*lab, "abort")
        self.ttft, self.tpot, self.itl, self.e2e = (h.labels(*lab) for h in (m.ttft, m.tpot, m.itl, m.e2e))
