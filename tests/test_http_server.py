"""The HTTP layer of `gpumix serve` (profiler/serve/) on an engine stand-in (no model): the official
`openai` client, completions and chat, streamed and whole, with and without an API key; every bad
request a 4xx with an OpenAI-shaped error; /metrics under vLLM's names; and hostile clients: a slow
reader is cut off while other streams flow and /health stays ok, 256 concurrent streams all finish,
half-sent requests are closed, a dead or stalled engine makes /health 503, a shutdown ends open
streams with an error chunk. Every server is on 127.0.0.1 at a port picked at run time."""
import asyncio
import json
import socket
import threading
import time

import httpx
import pytest

from gpumix.profiler.serve.server import Limits, Server
from gpumix.profiler.serve.standin import StandInLoop

openai = pytest.importorskip("openai")
KEY = "sk-test-0123"


@pytest.fixture
def make_server():
    made = []

    def make(step_s: float = 0.0005, api_key=None, max_seq: int = 4096, **limits):
        eng = StandInLoop(step_s=step_s)
        limits = {"read_timeout_s": 1.0, "shutdown_grace_s": 0.5, **limits}
        s = Server({"m": eng}, max_seq, api_key=api_key, limits=Limits(**limits)).start()
        made.append((s, eng))
        return s, eng
    yield make
    for s, eng in made:
        s.shutdown(timeout_s=20)
        eng.stop()


def error_shape(resp) -> dict:
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.mark.parametrize("key", [None, KEY])
def test_openai_client_completions_and_chat(make_server, key):
    s, _ = make_server(api_key=key)
    client = openai.OpenAI(base_url=s.url + "/v1", api_key=key or "none", max_retries=0, timeout=30)
    assert [m.id for m in client.models.list()] == ["m"]
    c = client.completions.create(model="m", prompt="a b c", max_tokens=5)
    assert c.usage.prompt_tokens == 3 and c.usage.completion_tokens == 5 and len(c.choices[0].text.split()) == 5
    chunks = list(client.completions.create(model="m", prompt="a b", max_tokens=4, stream=True,
                                            stream_options={"include_usage": True}))
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].text) == 4
    assert chunks[-1].usage.completion_tokens == 4 and chunks[-1].choices == []
    # chat: "<|user|> hi there <|assistant|>" is 4 prompt tokens
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi there"}], max_tokens=3)
    assert r.choices[0].message.role == "assistant" and len(r.choices[0].message.content.split()) == 3
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 3
    chunks = list(client.chat.completions.create(
        model="m", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        max_tokens=6, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for ch in chunks if ch.choices and ch.choices[0].delta.content) == 6
    assert chunks[-1].usage.prompt_tokens == 6 and chunks[-1].usage.completion_tokens == 6
    if key:
        bad = openai.OpenAI(base_url=s.url + "/v1", api_key="wrong", max_retries=0, timeout=30)
        for call in (lambda: bad.models.list(), lambda: bad.completions.create(model="m", prompt="a", max_tokens=1),
                     lambda: bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])):
            with pytest.raises(openai.AuthenticationError):
                call()
        r = httpx.post(s.url + "/v1/completions", json={"prompt": "a"}, timeout=10)
        assert r.status_code == 401 and error_shape(r)["code"] == "invalid_api_key"
        assert httpx.get(s.url + "/health", timeout=10).status_code == 200  # open, as vLLM's
        assert httpx.get(s.url + "/metrics", timeout=10).status_code == 200


BAD = [  # (route, body, status, param the error names)
    ("completions", {"prompt": "a", "stream": "no"}, 400, "stream"),
    ("completions", {"prompt": "a", "stream": True, "stream_options": {"include_usage": "yes"}}, 400,
     "stream_options.include_usage"),
    ("completions", {"prompt": "a", "stream": True, "stream_options": {"bogus": True}}, 400, "stream_options.bogus"),
    ("completions", {"prompt": "a", "stream": True, "stream_options": "x"}, 400, "stream_options"),
    ("completions", {"prompt": "a", "stream_options": {"include_usage": True}}, 400, "stream_options"),
    ("completions", {"prompt": "a", "max_tokens": "5"}, 400, "max_tokens"),
    ("completions", {"prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
    ("completions", {"prompt": "a", "max_tokens": 5000}, 400, "max_tokens"),
    ("completions", {"max_tokens": 3}, 400, "prompt"),
    ("completions", {"prompt": []}, 400, "prompt"),
    ("completions", {"prompt": [1, True]}, 400, "prompt"),
    ("completions", {"prompt": 7}, 400, "prompt"),
    ("completions", {"prompt": "a", "n": 2}, 400, "n"),
    ("completions", {"prompt": "a", "stop": ["\n"]}, 400, "stop"),
    ("completions", {"prompt": "a", "model": 3}, 400, "model"),
    ("completions", {"prompt": "a", "model": "other"}, 404, "model"),
    ("chat", {"max_tokens": 3}, 400, "messages"),
    ("chat", {"messages": []}, 400, "messages"),
    ("chat", {"messages": [{"role": "robot", "content": "a"}]}, 400, "messages.0.role"),
    ("chat", {"messages": [{"role": "user", "content": 5}]}, 400, "messages.0.content"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "messages.0.content"),
    ("chat", {"messages": [{"role": "user", "content": "a"}], "stream": 1}, 400, "stream"),
]


def test_bad_requests_get_openai_shaped_4xx(make_server):
    s, _ = make_server(max_seq=64)
    with httpx.Client(base_url=s.url + "/v1", timeout=30) as c:
        for route, body, status, param in BAD:
            r = c.post("/chat/completions" if route == "chat" else "/completions", json=body)
            assert r.status_code == status, (body, r.text)
            err = error_shape(r)
            assert err["param"] == param and err["type"] == "invalid_request_error", (body, err)
        raw = [(b"[" * 100_000, 400), (b'{"prompt": "a", "max_tokens": NaN}', 400), (b"not json", 400),
               (b"[1, 2]", 400), (b"\xff\xfe{}", 400), (b"", 400), (b'{"prompt": "' + b"a" * (9 << 20) + b'"}', 413)]
        for body, status in raw:
            r = c.post("/completions", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code == status, (body[:40], r.text)
            error_shape(r)
        r = c.get("/nope")
        assert r.status_code == 404 and error_shape(r)
        assert c.post("/completions", json={"prompt": "a b", "max_tokens": 2}).status_code == 200  # still serving


def test_metrics_carry_vllms_names(make_server):
    s, _ = make_server()
    with httpx.Client(base_url=s.url, timeout=30) as c:
        for stream in (False, True):
            assert c.post("/v1/completions", json={"prompt": "a b c", "max_tokens": 4, "stream": stream}).status_code == 200
        text = c.get("/metrics").text
    lines = {ln.split(" ")[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln and ln[0] != "#"}
    lab = '{engine="0",model_name="m"}'
    assert lines[f"vllm:prompt_tokens_total{lab}"] == 6 and lines[f"vllm:generation_tokens_total{lab}"] == 8
    assert lines['vllm:request_success_total{engine="0",finished_reason="length",model_name="m"}'] == 2
    for h in ("time_to_first_token_seconds", "time_per_output_token_seconds", "inter_token_latency_seconds",
              "e2e_request_latency_seconds"):
        assert lines[f"vllm:{h}_count{lab}"] > 0
    assert lines[f"vllm:num_requests_running{lab}"] == 0 and lines[f"vllm:num_requests_waiting{lab}"] == 0


def _send_raw(s: Server, body: dict, rcvbuf: int | None = None) -> socket.socket:
    host, port = s.sock.getsockname()[:2]
    c = socket.socket()
    if rcvbuf:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    c.connect((host, port))
    data = json.dumps(body).encode()
    c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(data) + data)
    return c


def _stream_tokens(c: httpx.Client, n: int) -> int:
    with c.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": n, "stream": True}) as r:
        return sum(1 for ln in r.iter_lines() if ln.startswith("data: {") and '"text": " t' in ln)


def test_a_slow_reader_is_cut_off_and_others_keep_flowing(make_server):
    s, eng = make_server(step_s=0.0002, max_seq=1_000_000, stream_buffer=256)
    s.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)  # accepted sockets inherit it: fills sooner
    slow = _send_raw(s, {"prompt": "a", "max_tokens": 900_000, "stream": True}, rcvbuf=4096)  # never read
    flowed = []
    with httpx.Client(base_url=s.url, timeout=60) as c:
        deadline = time.monotonic() + 120
        while s.state.streams_cut == 0 and time.monotonic() < deadline:
            flowed.append(_stream_tokens(c, 50))
            assert c.get("/health").json() == {"status": "ok"}
        assert s.state.streams_cut == 1, "the slow reader was never cut off"
        assert flowed and all(n == 50 for n in flowed)
        assert _stream_tokens(c, 200) == 200 and c.get("/health").json() == {"status": "ok"}
    deadline = time.monotonic() + 30
    while eng._running and time.monotonic() < deadline:  # cancelled in the engine, not run to the end
        time.sleep(0.05)
    assert not eng._running
    slow.settimeout(30)
    with pytest.raises(ConnectionResetError):
        while slow.recv(1 << 20):
            pass
    slow.close()


def test_a_client_that_leaves_mid_stream_cancels_its_request(make_server):
    s, eng = make_server(step_s=0.002, max_seq=1_000_000)
    with httpx.Client(base_url=s.url, timeout=30) as c:
        with c.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": 500_000, "stream": True}) as r:
            next(r.iter_lines())
    deadline = time.monotonic() + 30
    while eng._running and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not eng._running


def test_a_burst_of_256_concurrent_streams_all_finish(make_server):
    s, _ = make_server(step_s=0.001)

    async def burst():
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(base_url=s.url, limits=limits, timeout=120) as c:
            async def one(i):
                body = {"prompt": f"w{i}", "max_tokens": 32, "stream": True, "stream_options": {"include_usage": True}}
                async with c.stream("POST", "/v1/completions", json=body) as r:
                    assert r.status_code == 200
                    lines = [ln async for ln in r.aiter_lines() if ln.startswith("data: ")]
                assert lines[-1] == "data: [DONE]"
                return json.loads(lines[-2][6:])["usage"]["completion_tokens"]
            return await asyncio.gather(*(one(i) for i in range(256)))
    assert asyncio.run(burst()) == [32] * 256


@pytest.mark.parametrize("payload", [
    b"", b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n", b"GET /health HTTP/1.1\r\n",
    b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"prompt",
    bytes.fromhex("16030100c4010000c00303") + bytes(32)],  # a TLS ClientHello's start
    ids=["nothing", "half-head", "bare-request-line", "half-body", "tls-hello"])
def test_half_sent_requests_are_closed(make_server, payload):
    s, _ = make_server(read_timeout_s=1.0)
    host, port = s.sock.getsockname()[:2]
    with socket.create_connection((host, port), timeout=30) as c:
        c.sendall(payload)
        t0 = time.monotonic()
        try:
            while c.recv(65536):  # a 400 may come first; then the server closes
                pass
        except ConnectionResetError:
            pass
        assert time.monotonic() - t0 < 20  # closed by the server (recv's own timeout is 30 s)
    assert httpx.get(s.url + "/health", timeout=10).status_code == 200


def test_a_dead_engine_makes_health_503(make_server):
    s, eng = make_server()
    with httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.get("/health").status_code == 200
        eng.kill("injected device fault")
        deadline = time.monotonic() + 30
        while eng.alive and time.monotonic() < deadline:
            time.sleep(0.02)
        r = c.get("/health")
        assert r.status_code == 503 and "injected device fault" in error_shape(r)["message"]
        r = c.post("/v1/completions", json={"prompt": "a", "max_tokens": 2})
        assert r.status_code == 503 and error_shape(r)["type"] == "server_error"


def test_a_stalled_engine_makes_health_503(make_server):
    s, eng = make_server(stall_s=0.3, request_timeout_s=30)
    eng.stall()
    with httpx.Client(base_url=s.url, timeout=30) as c:
        t = threading.Thread(target=lambda: c.post("/v1/completions", json={"prompt": "a", "max_tokens": 2}),
                             daemon=True)
        t.start()
        deadline = time.monotonic() + 30
        r = c.get("/health")
        while r.status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
            r = c.get("/health")
        assert r.status_code == 503 and "stalled" in error_shape(r)["message"]
        eng.stop()  # the waiting request fails; its thread ends
        t.join(30)


def test_shutdown_lets_short_streams_finish_and_ends_long_ones_with_an_error(make_server):
    s, _ = make_server(step_s=0.005, max_seq=1_000_000, shutdown_grace_s=1.0)
    got = {}

    def read(name, n):
        with httpx.Client(base_url=s.url, timeout=60) as c:
            with c.stream("POST", "/v1/completions", json={"prompt": "a", "max_tokens": n, "stream": True}) as r:
                got[name] = [ln[6:] for ln in r.iter_lines() if ln.startswith("data: ")]
    readers = [threading.Thread(target=read, args=a) for a in (("short", 40), ("long", 100_000))]
    for t in readers:
        t.start()
    deadline = time.monotonic() + 30
    while s.state.open_streams < 2 and time.monotonic() < deadline:  # both streams are open
        time.sleep(0.01)
    s.shutdown(timeout_s=30)
    for t in readers:
        t.join(30)
    assert got["short"][-1] == "[DONE]" and sum('" t' in e for e in got["short"]) == 40
    assert got["long"][-1] == "[DONE]" and "server shutting down" in json.loads(got["long"][-2])["error"]["message"]
