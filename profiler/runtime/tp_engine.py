"""A tensor-parallel replica as t processes: this process is rank 0 and runs the engine (scheduler,
sampling, whatever drives it); ranks 1..t-1 are spawned workers that repeat each step's forward
pass with their shard.

Every step rank 0 broadcasts a compact description over a gloo control group (CPU tensors, on CPU
and CUDA alike), then all ranks run the same forward; the model's row-parallel all-reduces run
on the data group (gloo on CPU, NCCL on CUDA). Only rank 0 reads the logits.

  header [3] int64: (op, B, S)          op: STEP, PING (idle keep-alive) or STOP
  body   [2*B*S + B] int64: tokens [B, S] | positions [B, S] | KV slots [B]

Faults never hang: every collective has a timeout (an idle rank 0 pings every half second, so a
worker waiting for work only times out when rank 0 is gone or stuck); a watchdog thread polls the
workers and aborts the groups when one exits, so rank 0's next or pending collective raises with
that rank's exit code; close() sends STOP and kills whatever is left after a grace period.
"""
from __future__ import annotations

import datetime
import os
import signal
import threading
import time
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gpumix.profiler.runtime.engine import Engine, ModelRunner, Request
from gpumix.profiler.runtime.model import ModelArgs, build, head_count_ok
from gpumix.profiler.runtime.tp import apply_tp

STEP, PING, STOP = 0, 1, 2


def _device(device: str, rank: int) -> str:
    """cuda:b is rank 0's GPU; rank r runs on cuda:b+r."""
    if not str(device).startswith("cuda"):
        return "cpu"
    base = int(str(device).partition(":")[2] or 0)
    return f"cuda:{base + rank}"


def _groups(store, rank: int, world: int, device: str, timeout_s: float):
    """(control, data) process groups of this replica, made directly on its own store: several
    replicas can live in one process, and none touches torch's default group."""
    timeout = datetime.timedelta(seconds=timeout_s)
    opts = dist.ProcessGroupGloo._Options()
    opts._timeout = timeout
    opts._devices = [dist.ProcessGroupGloo.create_device(hostname="127.0.0.1")]
    ctl = dist.ProcessGroupGloo(dist.PrefixStore("ctl/", store), rank, world, opts)
    if not device.startswith("cuda"):
        return ctl, ctl
    nccl = dist.ProcessGroupNCCL.Options()
    nccl._timeout = timeout
    return ctl, dist.ProcessGroupNCCL(dist.PrefixStore("data/", store), rank, world, nccl)


def _worker(rank: int, world: int, port: int, device: str, build_kw: dict, n_slots: int,
            max_seq: int, threads: int, timeout_s: float, conn) -> None:
    try:
        dev = _device(device, rank)
        if dev.startswith("cuda"):
            torch.cuda.set_device(dev)
        else:
            torch.set_num_threads(threads)
        model = build(device=dev, **build_kw)
        store = dist.TCPStore("127.0.0.1", port, world, False, datetime.timedelta(seconds=timeout_s))
        conn.send(("built", None))
        ctl, data = _groups(store, rank, world, dev, timeout_s)
        runner = ModelRunner(apply_tp(model, rank, world, data), n_slots, max_seq)
        header = torch.empty(3, dtype=torch.int64)
        while True:
            ctl.broadcast(header, 0).wait()
            op, B, S = header.tolist()
            if op == STOP:
                break
            if op == PING:
                continue
            body = torch.empty(2 * B * S + B, dtype=torch.int64)
            ctl.broadcast(body, 0).wait()
            tokens, pos, slots = body.split([B * S, B * S, B])
            runner.forward(tokens.view(B, S), pos.view(B, S), slots)
    except BaseException:  # noqa: BLE001 - rank 0 reports it
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
        os._exit(1)  # no interpreter teardown racing half-open collectives


class Ranks:
    """Rank 0's handle on the worker processes: spawn, wait until built, watch, stop."""

    def __init__(self, world: int, device: str, build_kw: dict, n_slots: int, max_seq: int,
                 threads: int, timeout_s: float):
        self.world, self.timeout_s = world, timeout_s
        self.lock = threading.Lock()  # one collective sequence at a time (steps, pings, STOP)
        self.failure: str | None = None
        self._closing = threading.Event()
        # port 0: the store listens on a free loopback port and tells us which
        self.store = dist.TCPStore("127.0.0.1", 0, world, True, datetime.timedelta(seconds=timeout_s),
                                   wait_for_workers=False)
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        for r in range(1, world):
            ours, theirs = ctx.Pipe()
            p = ctx.Process(target=_worker, daemon=True, name=f"gpumix-tp-rank{r}",
                            args=(r, world, self.store.port, device, build_kw, n_slots, max_seq,
                                  threads, timeout_s, theirs))
            p.start()
            theirs.close()
            self.conns.append(ours)
            self.procs.append(p)
        self.ctl = self.data = None

    def connect(self, device: str, start_timeout_s: float) -> None:
        """Wait until every worker built its model, then form the groups (all ranks are there)."""
        built, deadline = set(), time.monotonic() + start_timeout_s
        while len(built) < len(self.procs):
            for r, (conn, p) in enumerate(zip(self.conns, self.procs), start=1):
                if r in built:
                    continue
                if conn.poll(0.05):
                    kind, payload = conn.recv()
                    if kind == "error":
                        raise RuntimeError(f"TP rank {r} failed to start:\n{payload}")
                    built.add(r)
                elif p.exitcode is not None:
                    raise RuntimeError(f"TP rank {r} exited with code {p.exitcode} while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"TP ranks did not start within {start_timeout_s:g} s")
        self.ctl, self.data = _groups(self.store, 0, self.world, device, self.timeout_s)
        threading.Thread(target=self._watch, name="gpumix-tp-watchdog", daemon=True).start()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def _dead(self) -> str | None:
        for r, (conn, p) in enumerate(zip(self.conns, self.procs), start=1):
            if p.exitcode is None:
                continue
            why = f"TP rank {r} (pid {p.pid}) exited with code {p.exitcode}"
            if p.exitcode < 0:
                why += f" ({signal.Signals(-p.exitcode).name})"
            try:
                if conn.poll():
                    kind, payload = conn.recv()
                    if kind == "error":
                        why += ": " + payload.strip().splitlines()[-1]
            except (OSError, EOFError):
                pass
            return why
        return None

    def _watch(self) -> None:
        while not self._closing.wait(0.1):
            why = self._dead()
            if why:
                self.failure = why
                for g in {id(g): g for g in (self.ctl, self.data)}.values():
                    try:  # a pending collective on the survivors raises instead of waiting
                        g.abort()
                    except Exception:  # noqa: BLE001 - best effort: gloo raises on its own
                        pass
                return

    def explain(self, e: BaseException) -> str:
        """Why a collective failed: the dead rank if there is one (give the watchdog a moment)."""
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            why = self.failure or self._dead()
            if why:
                break
            time.sleep(0.05)
        else:
            why = f"TP collective failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        self.failure = why  # the group is broken: close() kills the ranks instead of stopping them
        return why

    def send(self, op: int, tokens=None, pos=None, slots=None) -> None:
        B, S = (0, 0) if tokens is None else tokens.shape
        self.ctl.broadcast(torch.tensor([op, B, S], dtype=torch.int64), 0).wait()
        if op == STEP:
            self.ctl.broadcast(torch.cat([tokens.flatten(), pos.flatten(), slots]), 0).wait()

    def close(self, grace_s: float = 5.0) -> None:
        if self._closing.is_set():
            return
        self._closing.set()
        if self.ctl is not None and self.failure is None and self.lock.acquire(timeout=2.0):
            try:
                self.send(STOP)
            except Exception:  # noqa: BLE001 - the workers are killed below anyway
                pass
            finally:
                self.lock.release()
        deadline = time.monotonic() + (0.0 if self.failure else grace_s)
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(2.0)
        for c in self.conns:
            c.close()


class TPRunner(ModelRunner):
    def __init__(self, model, n_slots: int, max_seq: int, ranks: Ranks):
        super().__init__(model, n_slots, max_seq)
        self.ranks = ranks

    def run(self, kind: str, batch: list[Request]) -> list[int]:
        tokens, pos, slots = self.inputs(kind, batch)
        with self.ranks.lock:
            try:
                self.ranks.send(STEP, tokens, pos, slots)
                logits = self.forward(tokens, pos, slots)
            except Exception as e:
                raise RuntimeError(self.ranks.explain(e)) from e
        return self.pick(kind, batch, logits)


class TPEngine(Engine):
    """Engine over `world` ranks: the same scheduler; each step is broadcast before it runs."""

    def __init__(self, args: ModelArgs, world: int, device: str = "cpu", dtype=torch.float32,
                 n_slots: int = 32, max_seq: int = 2048, seed: int = 0, threads: int | None = None,
                 timeout_s: float = 60.0, start_timeout_s: float = 180.0):
        why = head_count_ok(args, world)
        if why:
            raise ValueError(why)
        threads = threads or max(1, (os.cpu_count() or 1) // world)
        build_kw = {"args": args, "dtype": dtype, "seed": seed}
        self.ranks = Ranks(world, device, build_kw, n_slots, max_seq, threads, timeout_s)
        try:
            dev = _device(device, 0)
            model = build(device=dev, **build_kw)
            self.ranks.connect(dev, start_timeout_s)
            model = apply_tp(model, 0, world, self.ranks.data)
            super().__init__(model, n_slots, max_seq, TPRunner(model, n_slots, max_seq, self.ranks))
        except BaseException:
            self.ranks.close(grace_s=0.0)
            raise

    def heartbeat(self) -> None:
        with self.ranks.lock:
            try:
                self.ranks.send(PING)
            except Exception as e:
                raise RuntimeError(self.ranks.explain(e)) from e
        if self.ranks.failure:
            raise RuntimeError(self.ranks.failure)

    def close(self) -> None:
        self.ranks.close()

    def __enter__(self) -> "TPEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
