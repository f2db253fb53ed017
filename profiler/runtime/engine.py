"""Continuous batching in the shape of nano-vllm: a scheduler (policy), a slot manager (KV memory),
a model runner (the device) and an engine whose step() is schedule -> run -> update.

Requests join the running batch after their prefill and leave it when they finish, between
steps. Each request holds one KV-cache slot of max_seq tokens from admission to finish, so
nothing is ever preempted. Sampling is greedy.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import torch

from profiler.runtime.model import Transformer


@dataclass
class Request:
    id: int
    prompt: list[int]
    max_new_tokens: int
    output: list[int] = field(default_factory=list)
    slot: int | None = None

    @property
    def length(self) -> int:  # tokens in the KV cache once the last output token is fed back
        return len(self.prompt) + len(self.output)

    @property
    def done(self) -> bool:
        return len(self.output) >= self.max_new_tokens


class SlotManager:
    def __init__(self, n_slots: int):
        self.free = deque(range(n_slots))

    def allocate(self) -> int | None:
        return self.free.popleft() if self.free else None

    def release(self, slot: int) -> None:
        self.free.append(slot)


class Scheduler:
    """Prefill first (one waiting request a step while a slot is free), otherwise decode all running."""

    def __init__(self, n_slots: int, max_seq: int):
        self.slots = SlotManager(n_slots)
        self.max_seq = max_seq
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def add(self, req: Request) -> None:
        if len(req.prompt) + req.max_new_tokens > self.max_seq:
            raise ValueError(f"request {req.id}: {len(req.prompt)} + {req.max_new_tokens} tokens "
                             f"exceed the cache's {self.max_seq}")
        self.waiting.append(req)

    def schedule(self) -> tuple[str, list[Request]]:
        if self.waiting and self.slots.free:
            req = self.waiting.popleft()
            req.slot = self.slots.allocate()
            return "prefill", [req]
        return "decode", list(self.running)

    def update(self, kind: str, batch: list[Request]) -> list[Request]:
        """Admit prefilled requests; retire finished ones (their slots free up for the next step)."""
        if kind == "prefill":
            self.running.extend(batch)
        finished = [r for r in self.running if r.done]
        for r in finished:
            self.running.remove(r)
            self.slots.release(r.slot)
        return finished

    def idle(self) -> bool:
        return not self.waiting and not self.running


class ModelRunner:
    def __init__(self, model: Transformer, n_slots: int, max_seq: int):
        self.model = model
        self.device = model.output.weight.device
        model.setup_cache(n_slots, max_seq)

    @torch.inference_mode()
    def run(self, kind: str, batch: list[Request]) -> list[int]:
        if kind == "prefill":  # one request: its whole prompt
            (req,) = batch
            tokens = torch.tensor([req.prompt], device=self.device)
            pos = torch.arange(len(req.prompt), device=self.device)[None]
        else:  # every running request: its last token
            tokens = torch.tensor([[r.output[-1]] for r in batch], device=self.device)
            pos = torch.tensor([[r.length - 1] for r in batch], device=self.device)
        slots = torch.tensor([r.slot for r in batch], device=self.device)
        logits = self.model(tokens, pos, slots, last_only=True)  # [B, 1, V]
        return logits[:, -1].argmax(-1).tolist()


class Engine:
    def __init__(self, model: Transformer, n_slots: int, max_seq: int):
        self.scheduler = Scheduler(n_slots, max_seq)
        self.runner = ModelRunner(model, n_slots, max_seq)
        self._next_id = 0

    def add(self, prompt: list[int], max_new_tokens: int) -> int:
        req = Request(self._next_id, list(prompt), max_new_tokens)
        self._next_id += 1
        self.scheduler.add(req)
        return req.id

    def step(self) -> list[Request]:
        return self.step_batch()[1]

    def step_batch(self) -> tuple[list[Request], list[Request]]:
        """One step; (requests that got a token, requests that finished). Streaming servers
        timestamp each token from the first list."""
        kind, batch = self.scheduler.schedule()
        if not batch:
            return [], []
        for req, token in zip(batch, self.runner.run(kind, batch)):
            req.output.append(token)
        return batch, self.scheduler.update(kind, batch)

    def run(self) -> dict[int, list[int]]:
        """Step until every request finished; {request id: generated tokens}."""
        out: dict[int, list[int]] = {}
        while not self.scheduler.idle():
            for req in self.step():
                out[req.id] = req.output
        return out
