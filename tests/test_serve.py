"""`gpumix serve` (OpenAI-compatible, streaming) and endpoint-mode faults: a refusing server, a
server answering errors, a server killed mid-run. Every server is on 127.0.0.1 at a port picked
at run time and is stopped in a finally; every client call has a timeout."""
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from helpers import TINY_CONFIG

runner = CliRunner()
TINY = TINY_CONFIG
WORKLOAD = """
models:
  - name: tiny
    config: tiny.json
    rate_rps: 4
    slo: {ttft_ms: 2000, tpot_ms: 500}
    buckets:
      - {input_tokens: 16, output_tokens: 8, share: 1.0}
gpus:
  - {name: testcpu, price_per_hour: 0.1}
max_utilization: 0.8
"""


def hand_plan(rps: float = 4.0, max_rps: float = 50.0) -> dict:
    return {"schema_version": 1, "status": "optimal", "cost_per_hour": 0.1, "lower_bound_per_hour": 0.1,
            "gap": 0.0, "max_utilization": 0.8,
            "replicas": [{"model": "tiny", "gpu": "testcpu", "tp": 1, "count": 1, "gpus": 1,
                          "price_per_gpu_hour": 0.1, "cost_per_hour": 0.1, "utilization": rps / max_rps,
                          "routes": [{"input_tokens": 16, "output_tokens": 8, "rps": rps, "max_rps": max_rps,
                                      "source": "measured"}]}],
            "inputs": {"workload": "wl.yaml", "profiles": None}}


@pytest.fixture
def files(tmp_path):
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    (tmp_path / "wl.yaml").write_text(WORKLOAD)
    (tmp_path / "plan.json").write_text(json.dumps(hand_plan()))
    return tmp_path


def serve_process(*args, timeout_s: float = 60.0):
    """Start `gpumix serve ... --port 0` and return (process, base URL) once it listens."""
    cmd = [sys.executable, "-m", "gpumix", "serve", "--port", "0", *map(str, args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            if "http://" in line:
                return proc, line.split(" on ", 1)[1].split("/v1")[0]
        if proc.poll() is not None:
            break
    stop(proc)
    raise RuntimeError(f"gpumix serve did not start: {proc.stderr.read()[-2000:]}")


def stop(proc) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.fixture
def server(files):
    pytest.importorskip("torch")
    proc, url = serve_process("--model", "tiny", "--workload", files / "wl.yaml", "--dtype", "fp32",
                              "--threads", "1", "--max-batch", "8", "--max-seq", "64")
    try:
        yield proc, url
    finally:
        stop(proc)


def post(url: str, body: dict, timeout: float = 30.0):
    req = urllib.request.Request(url + "/v1/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return urllib.request.urlopen(req, timeout=timeout)


def test_serve_speaks_openai_completions_with_streaming(server):
    _, url = server
    models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=10).read())
    assert [m["id"] for m in models["data"]] == ["tiny"]
    whole = json.loads(post(url, {"model": "tiny", "prompt": "a b c d", "max_tokens": 5}).read())
    assert whole["usage"] == {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}
    assert len(whole["choices"][0]["text"].split()) == 5
    with post(url, {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 4, "stream": True,
                    "stream_options": {"include_usage": True}}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [line[6:] for line in resp.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert sum(1 for c in chunks if c["choices"] and c["choices"][0]["text"]) == 4
    assert chunks[-1]["usage"]["completion_tokens"] == 4
    for body, code in (({"model": "other", "prompt": "x"}, 404), ({"model": "tiny", "prompt": "x", "max_tokens": 0}, 400),
                       ({"model": "tiny", "prompt": "x " * 60, "max_tokens": 10}, 400)):
        with pytest.raises(urllib.error.HTTPError) as e:
            post(url, body)
        assert e.value.code == code and "message" in json.loads(e.value.read())["error"]


def test_validate_against_a_refusing_endpoint_reports_and_exits_1(files):
    from gpumix.profiler.runtime.tp import free_port  # a port nothing listens on

    t0 = time.monotonic()
    r = runner.invoke(app, ["validate", str(files / "plan.json"), str(files / "wl.yaml"), "--endpoint",
                            f"http://127.0.0.1:{free_port()}", "--duration", "2", "--drain", "1",
                            "--report", str(files / "rep.json"), "-q"])
    assert r.exit_code == 1, r.output
    assert time.monotonic() - t0 < 30
    rep = json.loads((files / "rep.json").read_text())
    g = rep["groups"][0]
    assert rep["passed"] is False and g["status"] == "error" and g["passed"] is False
    assert "refused" in " ".join(g["reasons"]).lower() or "connect" in " ".join(g["reasons"]).lower()


def test_validate_against_a_server_answering_errors(files):
    pytest.importorskip("torch")
    from gpumix.profiler.serve import server as srv
    from gpumix.profiler.runtime.replica import EngineLoop, ReplicaSpec, build_engine
    from gpumix.profiler.runtime.model import ModelArgs

    args = ModelArgs.from_config(TINY)
    loop = EngineLoop(build_engine(ReplicaSpec(args.to_dict(), n_slots=4, max_seq=64)), args.vocab).start()
    httpd, thread = srv.start(loop, "tiny", 64)
    try:
        loop.kill("injected device fault")
        deadline = time.monotonic() + 10
        while loop.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        r = runner.invoke(app, ["validate", str(files / "plan.json"), str(files / "wl.yaml"), "--endpoint",
                                httpd.url, "--duration", "2", "--drain", "1", "--report", str(files / "rep.json"), "-q"])
    finally:
        httpd.shutdown()
        httpd.server_close()
        loop.stop()
    assert r.exit_code == 1, r.output
    g = json.loads((files / "rep.json").read_text())["groups"][0]
    assert g["status"] == "error" and "injected device fault" in " ".join(g["reasons"])


def test_killing_the_server_mid_run_yields_a_report_not_a_hang(server, files):
    proc, url = server
    from gpumix.profiler.validate.run import ValidateOptions, validate

    written = []
    opts = ValidateOptions(endpoint=url, gpu_name="testcpu", duration_s=4.0, drain_s=2.0)
    killer = threading.Timer(1.5, proc.send_signal, (signal.SIGKILL,))
    t0 = time.monotonic()
    killer.start()
    try:
        rep = validate(files / "plan.json", files / "wl.yaml", opts, write=written.append)
    finally:
        killer.cancel()
    assert time.monotonic() - t0 < 30
    g = rep["groups"][0]
    assert rep["passed"] is False and g["passed"] is False
    assert 0 < g["completed"] < g["requests"]  # partial results kept
    assert g["ttft_ms"]["p50"] is not None and g["errors"]
    assert written and written[-1]["groups"][0]["completed"] == g["completed"]


def test_profile_endpoint_writes_entries(server, files):
    _, url = server
    out = files / "ep.json"
    r = runner.invoke(app, ["profile", "endpoint", str(files / "wl.yaml"), "--endpoint", url, "--gpu-name",
                            "testcpu", "--out", str(out), "--duration", "1", "--start-rps", "4",
                            "--max-steps", "2", "-q"])
    assert r.exit_code == 0, r.output
    from gpumix.planner.profiles import load_profiles

    (e,) = load_profiles(out)
    assert e.source == "endpoint" and e.gpu == "testcpu" and e.max_rps > 0
    assert json.loads(out.read_text())["endpoint_profiles"][0]["searches"][0]["steps"]


def test_serve_bad_input_exits_2(files):
    r = runner.invoke(app, ["serve", "--model", "no-such-model", "--port", "0"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["serve", "--model", "tiny", "--workload", str(files / "wl.yaml"), "--tp", "3"])
    assert r.exit_code == 2 and "--tp" in r.output and "heads" in r.output  # 4 heads over 3 ranks


def test_import_cli_stays_torch_free():
    code = "import sys, gpumix.planner, gpumix.solvers, gpumix.cli.app; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60, cwd=Path(__file__).parent.parent).returncode == 0


def test_serve_with_an_api_key_end_to_end(files, monkeypatch):
    """The real torch runtime behind `gpumix serve --api-key`: the openai client (completions and chat,
    streamed and whole), validate --endpoint and profile endpoint with the key (and refused without
    it), /metrics, and a SIGTERM that lets the stream in flight finish and exits 0."""
    pytest.importorskip("torch")
    openai = pytest.importorskip("openai")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    key = "sk-gpumix-test"
    proc, url = serve_process("--model", "tiny", "--workload", files / "wl.yaml", "--dtype", "fp32", "--threads", "1",
                              "--max-batch", "8", "--max-seq", "64", "--api-key", key)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)
        c = client.completions.create(model="tiny", prompt="a b c d", max_tokens=5)
        assert c.usage.completion_tokens == 5 and len(c.choices[0].text.split()) == 5
        chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a b"}], max_tokens=4)
        assert chat.usage.prompt_tokens == 4 and len(chat.choices[0].message.content.split()) == 4
        chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a"}],
                                                     max_tokens=6, stream=True, stream_options={"include_usage": True}))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).split() == \
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a"}],
                                           max_tokens=6).choices[0].message.content.split()  # greedy: same tokens
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0, timeout=60).models.list()

        common = ["--endpoint", url, "--duration", "2", "--drain", "5", "-q"]
        r = runner.invoke(app, ["validate", str(files / "plan.json"), str(files / "wl.yaml"), *common,
                                "--report", str(files / "rep.json")])
        assert r.exit_code == 2 and "--api-key" in r.output  # refused without the key: one line, exit 2
        for api in ("completions", "chat"):
            r = runner.invoke(app, ["validate", str(files / "plan.json"), str(files / "wl.yaml"), *common,
                                    "--api-key", key, "--api", api, "--report", str(files / "rep.json")])
            g = json.loads((files / "rep.json").read_text())["groups"][0]
            assert r.exit_code in (0, 1) and g["requests"] > 0 and g["completed"] == g["requests"], r.output
        monkeypatch.setenv("OPENAI_API_KEY", key)  # the environment's key works too
        out = files / "ep.json"
        r = runner.invoke(app, ["profile", "endpoint", str(files / "wl.yaml"), "--endpoint", url, "--gpu-name",
                                "testcpu", "--out", str(out), "--duration", "1", "--start-rps", "4",
                                "--max-steps", "1", "-q"])
        steps = json.loads(out.read_text())["endpoint_profiles"][0]["searches"][0]["steps"]
        assert r.exit_code in (0, 1) and steps and not steps[0]["errors"], r.output
        monkeypatch.delenv("OPENAI_API_KEY")
        r = runner.invoke(app, ["profile", "endpoint", str(files / "wl.yaml"), "--endpoint", url, "--gpu-name",
                                "testcpu", "--out", str(files / "none.json"), "-q"])
        assert r.exit_code == 2 and "--api-key" in r.output and not (files / "none.json").exists()

        metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()  # open without the key
        assert 'vllm:generation_tokens_total{engine="0",model_name="tiny"}' in metrics

        got = []

        def read_stream():
            req = urllib.request.Request(url + "/v1/completions", json.dumps(
                {"prompt": "a", "max_tokens": 60, "stream": True}).encode(),
                {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                for line in resp:
                    got.append(line.decode().strip())
                    if len(got) == 1:
                        proc.send_signal(signal.SIGTERM)  # mid-stream
        reader = threading.Thread(target=read_stream)
        reader.start()
        reader.join(60)
        events = [g[6:] for g in got if g.startswith("data: ")]
        assert events[-1] == "[DONE]" and sum('" t' in e for e in events) == 60  # finished within the grace
        assert proc.wait(timeout=60) == 0
    finally:
        stop(proc)


def test_a_cancelled_request_leaves_the_engine():
    """EngineLoop.cancel (what the server calls when a client leaves or is cut off): the request's
    slot is freed, its callback gets a last `cancelled`, and the replica keeps serving, alone or shared."""
    pytest.importorskip("torch")
    from gpumix.profiler.runtime.model import ModelArgs
    from gpumix.profiler.runtime.replica import ReplicaSpec
    from gpumix.profiler.runtime.sharing import start_replica

    args = ModelArgs.from_config(TINY)
    spec = ReplicaSpec(args.to_dict(), n_slots=2, max_seq=4096)
    for specs in ({"a": spec}, {"a": spec, "b": spec}):
        loop, doors = start_replica(specs)
        try:
            ends, got = threading.Event(), []

            def on_token(tok, t, done, err):
                got.append((tok, err))
                if len(got) == 3:
                    doors["a"].cancel(on_token)
                if done:
                    ends.set()
            doors["a"].submit([1, 2, 3], 4000, on_token)
            assert ends.wait(60)
            assert got[-1] == (None, "cancelled") and len(got) < 4000
            finished = threading.Event()
            doors["a"].submit([1], 3, lambda tok, t, done, err: done and not err and finished.set())
            assert finished.wait(60)
            deadline = time.monotonic() + 10
            engines = loop.engine.engines.values() if len(specs) > 1 else [loop.engine]
            while not all(e.scheduler.idle() for e in engines) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert all(len(e.scheduler.slots.free) == 2 for e in engines)
        finally:
            loop.stop()
