"""What `gpumix validate` was asked to do: load shape, where replicas run, how models are built."""
from __future__ import annotations

from dataclasses import dataclass, field

from gpumix.profiler.load.verdict import MIN_RATE_FRACTION, MIN_SLO_ATTAINMENT, Criteria
from gpumix.profiler.runtime.spec import RunOptions, Scale


@dataclass(frozen=True)
class ValidateOptions:
    device: str = "cpu"
    gpu_name: str | None = None  # default: the detected device name
    duration_s: float = 10.0
    drain_s: float | None = None  # default: max(5, duration)
    arrivals: str = "poisson"  # or "gamma"
    gamma_shape: float = 0.5  # gamma gaps' shape (< 1: burstier than Poisson)
    seed: int = 0
    replicas: int = 1  # replicas (sharing: sets) run per group (<= count)
    model: str | None = None  # only groups of this model
    endpoint: str | None = None
    endpoint_model: str | None = None  # name the server knows the model by
    prompt: str = "text"  # endpoint prompts: "text" or "tokens"
    api: str = "completions"  # endpoint API: "completions" or "chat"
    api_key: str | None = field(default=None, repr=False)  # endpoint key (Authorization: Bearer)
    profiles: str | None = None  # default: the plan's inputs.profiles
    scale_layers: int | None = None
    scale_hidden: float | None = None
    scale_vocab: int | None = None
    dtype: str | None = None
    max_batch: int | None = None
    threads: int | None = None
    memory_budget_gb: float | None = None  # refuse replicas needing more (runtime/memory.py); default: free memory
    min_rate_fraction: float = MIN_RATE_FRACTION
    min_slo_attainment: float = MIN_SLO_ATTAINMENT
    kill_replica_after_s: float | None = None  # fault injection (tests): the replica dies mid-run
    kill_rank_after_s: float | None = None  # fault injection (tests): replica 0's last TP rank is SIGKILLed

    def endpoint_target(self):
        """The endpoint as the load client reaches it (profiler.load.client.Endpoint); ValueError
        if the URL is not one."""
        from gpumix.profiler.load.client import Endpoint

        return Endpoint.parse(self.endpoint, self.api_key, self.api)

    @property
    def drain(self) -> float:
        return self.drain_s if self.drain_s is not None else max(5.0, self.duration_s)

    @property
    def gap_shape(self) -> float:
        """The arrival gaps' Gamma shape (1: Poisson)."""
        return 1.0 if self.arrivals == "poisson" else self.gamma_shape

    @property
    def scaled(self) -> bool:
        return self.run.scale.active

    @property
    def run(self) -> RunOptions:
        return RunOptions(device=self.device, dtype=self.dtype, max_batch=self.max_batch, threads=self.threads,
                          seed=self.seed, scale=Scale(self.scale_layers, self.scale_hidden, self.scale_vocab))

    @property
    def criteria(self) -> Criteria:
        return Criteria(self.min_rate_fraction, self.min_slo_attainment)
