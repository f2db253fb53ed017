"""The load client (profiler/load/client.py, aiohttp) against `gpumix serve`'s HTTP layer on an engine
stand-in, in both APIs, with an API key; against a tiny server that streams without usage and
without keep-alive (tokens counted one per chunk); its errors (refused key, HTTP errors, a stream cut
short) are messages, not hangs."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from gpumix.profiler.load import generator as loadgen
from gpumix.profiler.load.client import AuthError, Endpoint, EndpointBackend, list_models
from gpumix.profiler.serve.server import Limits, Server
from gpumix.profiler.serve.standin import StandInLoop


@pytest.fixture
def served():
    eng = StandInLoop(step_s=0.001)
    s = Server({"m": eng}, 4096, api_key="k-123", limits=Limits(shutdown_grace_s=0.5)).start()
    yield s
    s.shutdown(timeout_s=20)
    eng.stop()


def run(backend, n=12, rate=40.0, out=7):
    sched = loadgen.arrivals([(5, out, rate)], n / rate, seed=1)
    return loadgen.run([backend], [sched], drain_s=20, request_timeout_s=30)


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_both_apis_against_gpumix_serve_with_a_key(served, api):
    ep = Endpoint.parse(served.url, api_key="k-123", api=api)
    assert list_models(ep) == ["m"]
    backend = EndpointBackend(ep, "m")
    res = run(backend)
    assert res.records and all(r.ok for r in res.records), [r.error for r in res.records if r.error]
    assert {r.tokens for r in res.records} == {7}
    assert all(r.first >= r.sent and r.done >= r.last >= r.first for r in res.records)
    assert backend._client is None  # closed at the end of the run


def test_a_missing_or_wrong_key_is_refused_with_the_servers_message(served):
    for key in (None, "wrong"):
        ep = Endpoint.parse(served.url + "/v1", api_key=key)
        with pytest.raises(AuthError, match="401"):
            list_models(ep)
        res = run(EndpointBackend(ep, "m"), n=3)
        assert all(not r.ok and "HTTP 401" in r.error and "API key" in r.error for r in res.records)


def test_endpoint_urls():
    ep = Endpoint.parse("https://api.example.com/v1/chat/completions", api="chat")
    assert (ep.port, ep.base, ep.path, ep.models_path) == (443, "https://api.example.com:443/v1",
                                                          "/v1/chat/completions", "/v1/models")
    assert Endpoint.parse("localhost:8000").path == "/v1/completions"
    assert "secret" not in repr(Endpoint.parse("h:1", api_key="secret"))
    for bad in ("ftp://x", "http://", "http://h:99999"):
        with pytest.raises(ValueError):
            Endpoint.parse(bad)
    with pytest.raises(ValueError):
        EndpointBackend(Endpoint.parse("h:1", api="chat"), "m", prompt="tokens")


class _NoUsage(BaseHTTPRequestHandler):
    """TGI-like: chunks carry text, no usage chunk even when asked, HTTP/1.0 close-delimited."""

    def log_message(self, *a):
        pass

    def do_POST(self):  # noqa: N802
        req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        chat = "messages" in req
        if self.path.endswith("/bad/v1/completions"):
            self.wfile.write(b'data: {"choices": [{"text": " x"}]}\n\n')  # dies before [DONE]
            return
        for k in range(req["max_tokens"]):
            choice = {"delta": {"content": f" w{k}"}} if chat else {"text": f" w{k}"}
            self.wfile.write(f"data: {json.dumps({'choices': [choice]})}\n\n".encode())
        self.wfile.write(b'data: {"choices": [{"text": "", "finish_reason": "length"}]}\n\ndata: [DONE]\n\n')


@pytest.fixture
def no_usage():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NoUsage)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_a_server_without_usage_is_counted_by_chunks(no_usage, api):
    res = run(EndpointBackend(Endpoint.parse(no_usage, api=api), "m"), n=6, out=9)
    assert all(r.ok and r.tokens == 9 for r in res.records), [r.error for r in res.records]


def test_a_stream_cut_short_is_an_error(no_usage):
    res = run(EndpointBackend(Endpoint.parse(no_usage + "/bad"), "m"), n=2)
    assert all(not r.ok and "before [DONE]" in r.error for r in res.records)


def test_one_sender_feeds_every_schedule_on_time_order(served):
    """Several backends' schedules, arrivals at equal times included (a warm-up sends all at 0):
    every request is sent once, not before it is due, and measured from when it was sent."""
    ep = Endpoint.parse(served.url, api_key="k-123")
    backends = [EndpointBackend(ep, "m"), EndpointBackend(ep, "m", prompt="tokens")]
    at_zero = [loadgen.Arrival(0.0, 3, 2, k) for k in range(4)]
    spread = loadgen.arrivals([(3, 2, 50.0)], 0.2, seed=3)
    res = loadgen.run(backends, [at_zero, spread], drain_s=20, request_timeout_s=30)
    assert len(res.records) == len(at_zero) + len(spread)
    assert all(r.ok and r.tokens == 2 for r in res.records), [r.error for r in res.records if r.error]
    assert all(r.sent >= r.scheduled and r.first >= r.sent for r in res.records)
    assert [r.scheduled for r in res.records] == sorted(r.scheduled for r in res.records)
    assert all(b._client is None for b in backends)
