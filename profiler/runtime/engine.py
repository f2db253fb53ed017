"""Continuous batching in the shape of nano-vllm: a scheduler (policy), a slot manager (KV memory),
a model runner (the device) and an engine whose step() is schedule -> run -> update.

Requests join the running batch after their prefill and leave it when they finish, between
steps. Each request holds one KV-cache slot of max_seq tokens from admission to finish, so
nothing is ever preempted. Sampling is greedy.
"""
from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import torch

from gpumix.profiler.runtime.model import Transformer


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
    """Lowest free slot first, so running requests stay packed in the cache's low rows and a decode
    step can run rows [0, highest running slot] as one contiguous block (ModelRunner.inputs)."""

    def __init__(self, n_slots: int):
        self.free = list(range(n_slots))  # a heap

    def allocate(self) -> int | None:
        return heapq.heappop(self.free) if self.free else None

    def release(self, slot: int) -> None:
        heapq.heappush(self.free, slot)


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

    def cancel(self, req_id: int) -> bool:
        """Drop a request between steps (its client left): a waiting one leaves the queue, a running
        one frees its slot. False if it is not here (finished already)."""
        for r in self.waiting:
            if r.id == req_id:
                self.waiting.remove(r)
                return True
        for r in self.running:
            if r.id == req_id:
                self.running.remove(r)
                self.slots.release(r.slot)
                return True
        return False


class ModelRunner:
    def __init__(self, model: Transformer, n_slots: int, max_seq: int):
        self.model = model
        self.device = model.output.weight.device
        model.setup_cache(n_slots, max_seq)

    @staticmethod
    def inputs(kind: str, batch: list[Request]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A step as CPU int64 tensors: tokens, pos [B, S] and slots [B] (what TP ranks receive).
        A decode step runs cache rows 0..R-1, R = the highest running slot + 1: rows without a
        running request get token 0 at position 0 (a later prefill overwrites what they write) and
        their outputs are dropped (pick), so the keys are a view of the cache, not a gather."""
        if kind == "prefill":  # one request: its whole prompt
            (req,) = batch
            return torch.tensor([req.prompt]), torch.arange(len(req.prompt))[None], torch.tensor([req.slot])
        rows = max(r.slot for r in batch) + 1
        tokens = torch.zeros((rows, 1), dtype=torch.long)
        pos = torch.zeros((rows, 1), dtype=torch.long)
        at = torch.tensor([r.slot for r in batch])
        tokens[at, 0] = torch.tensor([r.output[-1] for r in batch])
        pos[at, 0] = torch.tensor([r.length - 1 for r in batch])
        return tokens, pos, torch.arange(rows)

    @staticmethod
    def pick(kind: str, batch: list[Request], logits: torch.Tensor) -> list[int]:
        """Each request's next token from a step's logits (decode rows are cache slots)."""
        ids = logits.argmax(-1).tolist()
        return ids if kind == "prefill" else [ids[r.slot] for r in batch]

    @torch.inference_mode()
    def forward(self, tokens: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        dev = self.device
        rows = torch.arange(len(slots), device=slots.device)
        keys = None if torch.equal(slots, rows) else slots.to(dev)  # rows 0..B-1: a view of the cache
        return self.model(tokens.to(dev), pos.to(dev), keys, last_only=True)[:, -1]  # [B, V]

    def run(self, kind: str, batch: list[Request]) -> list[int]:
        return self.pick(kind, batch, self.forward(*self.inputs(kind, batch)))


class Engine:
    def __init__(self, model: Transformer, n_slots: int, max_seq: int,
                 runner: ModelRunner | None = None):
        self.scheduler = Scheduler(n_slots, max_seq)
        self.runner = runner or ModelRunner(model, n_slots, max_seq)
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

    def heartbeat(self) -> None:
        """Called by a driving loop while it has nothing to step (TP ranks use it as a keep-alive)."""

    def close(self) -> None:
        """Release what the engine holds beyond its model (TP: the worker processes)."""

    def run(self) -> dict[int, list[int]]:
        """Step until every request finished; {request id: generated tokens}."""
        out: dict[int, list[int]] = {}
        while not self.scheduler.idle():
            for req in self.step():
                out[req.id] = req.output
        return out
