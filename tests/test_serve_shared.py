"""`gpumix serve` with several --model: both tiny models in one process on one device (a SharedLoop),
the request's `model` picks one. Each answer names its model and carries the tokens that model's own
engine gives (checked against an in-process reference), streamed or not, while the other model is
busy too; /v1/models lists both; an unknown model is 404, a request without `model` (or not a string) 400; a
--served-model-name count that does not match --model is exit 2 with one line; TP 2 serves both."""
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from helpers import TINY_CONFIG
from test_serve import post, serve_process, stop

torch = pytest.importorskip("torch")
CONFIGS = {"alpha": TINY_CONFIG, "beta": {**TINY_CONFIG, "hidden_size": 96, "num_attention_heads": 6,
                                          "vocab_size": 256}}
RUN = ["--dtype", "fp32", "--threads", "1", "--max-batch", "4", "--max-seq", "64"]
PROMPTS = {"alpha": "a b c d", "beta": [5, 6, 7]}
MAX_TOKENS = {"alpha": 5, "beta": 7}


@pytest.fixture
def configs(tmp_path):
    paths = []
    for name, cfg in CONFIGS.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
        paths += ["--model", tmp_path / f"{name}.json"]
    return paths


def reference(name: str) -> str:
    """The completion text of the model's own single engine (same seed, greedy)."""
    from gpumix.profiler.runtime.engine import Engine
    from gpumix.profiler.runtime.model import DTYPES, ModelArgs, build
    from gpumix.profiler.serve.server import tokenize

    args = ModelArgs.from_config(CONFIGS[name])
    engine = Engine(build(args, "cpu", DTYPES["fp32"], 0), n_slots=1, max_seq=64)
    rid = engine.add(tokenize(PROMPTS[name], args.vocab), MAX_TOKENS[name])
    return "".join(f" t{t}" for t in engine.run()[rid])


def whole(url: str, name: str) -> dict:
    return json.loads(post(url, {"model": name, "prompt": PROMPTS[name], "max_tokens": MAX_TOKENS[name]}).read())


def streamed(url: str, name: str) -> list[dict]:
    with post(url, {"model": name, "prompt": PROMPTS[name], "max_tokens": MAX_TOKENS[name], "stream": True,
                    "stream_options": {"include_usage": True}}) as resp:
        events = [line[6:] for line in resp.read().decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def check_both_models(url: str) -> None:
    models = json.loads(urllib.request.urlopen(url + "/v1/models", timeout=10).read())
    assert [m["id"] for m in models["data"]] == ["alpha", "beta"]
    with ThreadPoolExecutor(4) as pool:  # both models at once: they share the engine thread
        answers = {(kind, name): pool.submit(fn, url, name) for name in CONFIGS
                   for kind, fn in (("whole", whole), ("stream", streamed))}
        answers = {k: f.result(timeout=60) for k, f in answers.items()}
    for name in CONFIGS:
        want = reference(name)
        doc = answers["whole", name]
        assert doc["model"] == name and doc["choices"][0]["text"] == want
        assert doc["usage"]["completion_tokens"] == MAX_TOKENS[name]
        chunks = answers["stream", name]
        assert {c["model"] for c in chunks} == {name}
        assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == want
        assert chunks[-1]["usage"]["completion_tokens"] == MAX_TOKENS[name]


def test_serve_two_models_routes_by_model(configs):
    proc, url = serve_process(*configs, "--served-model-name", "alpha", "--served-model-name", "beta", *RUN)
    try:
        check_both_models(url)
        for body, code, says in (({"model": "gamma", "prompt": "x"}, 404, "gamma"),
                                 ({"model": ["alpha"], "prompt": "x"}, 400, "model"),  # strict types
                                 ({"prompt": "x"}, 400, "alpha, beta")):
            with pytest.raises(urllib.error.HTTPError) as e:
                post(url, body)
            assert e.value.code == code and says in json.loads(e.value.read())["error"]["message"]
        assert json.loads(urllib.request.urlopen(url + "/health", timeout=10).read()) == {"status": "ok"}
    finally:
        stop(proc)


def test_serve_two_models_at_tp2(configs):
    proc, url = serve_process(*configs, "--tp", "2", *RUN)  # names from the config files' stems
    try:
        check_both_models(url)
    finally:
        stop(proc)


@pytest.mark.parametrize("names", [["alpha"], ["alpha", "beta", "gamma"]])
def test_served_model_name_count_must_match(configs, names):
    args = [str(a) for a in configs] + [x for n in names for x in ("--served-model-name", n)]
    r = CliRunner().invoke(app, ["serve", *args, "--port", "0"])
    assert r.exit_code == 2
    (line,) = r.output.strip().splitlines()
    assert line.startswith("gpumix: error:") and "--served-model-name" in line and "2 --model" in line
