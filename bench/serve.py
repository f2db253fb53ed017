"""The HTTP layer alone: tokens/s and TTFT of `gpumix serve`'s server (FastAPI + uvicorn) against
the stdlib server it replaced (bench/baseline_stdlib_server.py), both over an engine stand-in that
costs nothing (profiler/serve/standin.py, step_s=0), at 1, 64 and 256 concurrent streams; then the
load generator's send-time lag (when a request's task began sending minus when it was due) at
500-5000 req/s against a zero-cost server.

  python bench/serve.py [--duration 3] [--tokens 256] [--rates 500,1000,2000,3000,5000] [--only lag]

Each server runs in its own process (so the client does not share its interpreter); the HTTP-layer
client is a minimal asyncio one (one connection per stream, `Connection: close`, which both servers
speak), so the figures are the servers', not the client's. C streams run closed-loop for --duration
seconds, each asking --tokens tokens: tokens/s counts every token chunk received, TTFT is connect ->
first token chunk (with a zero-cost engine: the HTTP layer's own overhead). The lag part drives
profiler.load (aiohttp, keep-alive pool, on uvloop where installed; GPUMIX_LOOP=asyncio for
asyncio's loop) against a raw asyncio server that answers every request at once with a one-token
stream; "client CPU" is the generator process's CPU time over the cell / requests. Prints markdown
tables.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent


# --- servers (child processes) ---------------------------------------------------------------------

def _serve_child(kind: str) -> None:
    from gpumix.profiler.serve.standin import StandInLoop

    eng = StandInLoop(step_s=0.0)
    if kind == "new":
        from gpumix.profiler.serve.server import Server

        s = Server({"m": eng}, 1 << 20)
        print(s.url, flush=True)
        s.serve()
    elif kind == "stdlib":
        sys.path.insert(0, str(ROOT))
        from baseline_stdlib_server import Server as Old

        s = Old(("127.0.0.1", 0), {"m": eng}, 1 << 20)
        print(s.url, flush=True)
        s.serve_forever(poll_interval=0.1)
    else:
        asyncio.run(_zero_server())


async def _zero_server() -> None:
    """Answers every POST at once: one token, the usage chunk, [DONE]; keep-alive, Content-Length."""
    body = (b'data: {"choices": [{"index": 0, "text": " t1", "finish_reason": null}]}\n\n'
            b'data: {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}\n\ndata: [DONE]\n\n')
    reply = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n" % len(body)) + body

    async def conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                n = next((int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0)
                await r.readexactly(n)
                w.write(reply)
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()
    srv = await asyncio.start_server(conn, "127.0.0.1", 0, backlog=4096)
    print(f"http://127.0.0.1:{srv.sockets[0].getsockname()[1]}", flush=True)
    await srv.serve_forever()


def start(kind: str):
    proc = subprocess.Popen([sys.executable, __file__, "_serve", kind], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = proc.stdout.readline().strip()
    if not url.startswith("http://"):
        proc.kill()
        raise RuntimeError(f"{kind} server did not start")
    return proc, url


# --- the HTTP-layer client ---------------------------------------------------------------------------

async def _stream(host: str, port: int, tokens: int) -> tuple[float, int]:
    body = json.dumps({"model": "m", "prompt": "a", "max_tokens": tokens, "stream": True}).encode()
    t0 = time.perf_counter()
    r, w = await asyncio.open_connection(host, port)
    w.write(b"POST /v1/completions HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    first, n, tail = None, 0, b""
    while True:
        data = await r.read(1 << 16)
        if not data:
            break
        chunk = tail + data
        k = chunk.count(b'" t')  # one per token chunk: "text": " t123"
        if k and first is None:
            first = time.perf_counter()
        n += k
        tail = chunk[-2:]
        if b"[DONE]" in chunk:
            break
    w.close()
    return (first - t0) if first else float("nan"), n


async def _layer(url: str, streams: int, tokens: int, duration: float) -> dict:
    host, port = url.split("//")[1].split(":")
    port = int(port)
    ttfts, counts, errors = [], [], []
    stop = time.perf_counter() + duration

    async def worker():
        while time.perf_counter() < stop:
            try:
                ttft, n = await asyncio.wait_for(_stream(host, port, tokens), 60)
            except (OSError, asyncio.TimeoutError) as e:  # reset, refused, or no answer: a failed request
                errors.append(type(e).__name__)
                continue
            ttfts.append(ttft)
            counts.append(n)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(streams)))
    wall = time.perf_counter() - t0
    ok = [t for t, n in zip(ttfts, counts) if n == tokens]
    q = sorted(ok)
    return {"tok_s": sum(counts) / wall, "ttft_p50_ms": 1e3 * statistics.median(q) if q else float("nan"),
            "ttft_p99_ms": 1e3 * q[int(0.99 * (len(q) - 1))] if q else float("nan"),
            "requests": len(counts) + len(errors), "failed": len(errors) + len(counts) - len(ok)}


def layer_table(duration: float, tokens: int) -> str:
    rows = ["| server | streams | tokens/s | TTFT p50 ms | TTFT p99 ms | requests | failed (reset, short) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in ("new", "stdlib"):
        proc, url = start(kind)
        try:
            asyncio.run(_layer(url, 4, 16, 0.5))  # warm-up
            for c in (1, 64, 256):
                m = asyncio.run(_layer(url, c, tokens, duration))
                name = "FastAPI + uvicorn" if kind == "new" else "stdlib (before)"
                rows.append(f"| {name} | {c} | {m['tok_s']:,.0f} | {m['ttft_p50_ms']:.1f} | {m['ttft_p99_ms']:.1f} | "
                            f"{m['requests']} | {m['failed']} |")
                print(rows[-1], file=sys.stderr, flush=True)
        finally:
            proc.kill()
            proc.wait()
    return "\n".join(rows)


# --- the generator's send-time lag ------------------------------------------------------------------

def lag_table(rates: list[float], duration: float) -> str:
    from gpumix.profiler.load import generator as loadgen
    from gpumix.profiler.load.client import Endpoint, EndpointBackend

    rows = ["| offered req/s | requests | completed | lag p50 ms | lag p99 ms | lag max ms | TTFT p50 ms "
            "| client CPU us/req |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    proc, url = start("zero")
    try:
        for rate in rates:
            backend = EndpointBackend(Endpoint.parse(url), "m")
            sched = loadgen.arrivals([(4, 1, rate)], duration, seed=0)
            cpu = time.process_time()
            res = loadgen.run([backend], [sched], drain_s=10, request_timeout_s=30, abort_after=10 ** 9)
            cpu = time.process_time() - cpu
            lags = sorted(1e3 * (r.sent - r.scheduled) for r in res.records if r.sent is not None)
            done = [r for r in res.records if r.ok]
            ttft = statistics.median(1e3 * r.ttft_s for r in done) if done else float("nan")
            rows.append(f"| {rate:,.0f} | {len(res.records)} | {len(done)} | {statistics.median(lags):.2f} | "
                        f"{lags[int(0.99 * (len(lags) - 1))]:.2f} | {lags[-1]:.2f} | {ttft:.2f} | "
                        f"{1e6 * cpu / len(sched):,.0f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        proc.kill()
        proc.wait()
    return "\n".join(rows)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "_serve":
        _serve_child(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    ap.add_argument("--tokens", type=int, default=256, help="tokens per streamed request")
    ap.add_argument("--rates", default="500,1000,2000,3000,5000", help="req/s for the lag bench")
    ap.add_argument("--only", choices=["layer", "lag"], default=None)
    a = ap.parse_args()
    print(f"# bench/serve.py on {os.cpu_count()} CPUs, {a.duration:g} s a cell, {a.tokens} tokens a stream\n")
    if a.only in (None, "layer"):
        print("## HTTP layer over a zero-cost engine stand-in\n\n" + layer_table(a.duration, a.tokens) + "\n")
    if a.only in (None, "lag"):
        print("## Load generator send-time lag against a zero-cost server\n\n"
              + lag_table([float(r) for r in a.rates.split(",")], a.duration) + "\n")


if __name__ == "__main__":
    main()
