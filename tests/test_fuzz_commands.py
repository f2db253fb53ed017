"""Corrupted inputs for `export`, `validate`, `profile import-vllm` and `sweep`, in-process: exit 0,
1 (validate's failures), 2 or 3; on an error one line on stderr, no traceback, no internal error,
nothing written; a successful export whose scripts parse (`sh -n`) and whose YAML loads, with no
control character from a name in any file.

validate always drives `--endpoint http://127.0.0.1:9` (nothing listens; no model is ever built).
Few examples each (about 30 s on a busy 2-core machine); GPUMIX_FUZZ_SCALE multiplies them.
"""
import itertools
import json
import os
import re
import shlex
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpumix.cli.app import app
from helpers import mutated_doc

runner = CliRunner()
SCALE = int(os.environ.get("GPUMIX_FUZZ_SCALE", "1"))
SETTINGS = settings(max_examples=20 * SCALE, deadline=None, derandomize=SCALE == 1, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FAST = ("--time-limit", "5", "--no-baseline", "-q")
GOOD = {
    "models": [{"name": "llama-3.1-8b", "rate_rps": 2.0, "slo": {"ttft_ms": 1000, "tpot_ms": 60},
                "buckets": [{"input_tokens": 256, "output_tokens": 128, "share": 0.6},
                            {"input_tokens": 1024, "output_tokens": 256, "share": 0.4}]}],
    "gpus": [{"name": "A10G", "price_per_hour": 1.01, "available": 8}, {"name": "L4"}],
}
NODES = {"models": GOOD["models"], "instances": [
    {"name": "box", "gpu": "L4", "gpus": 4, "price_per_hour": 3.2, "region": "us", "available": 2}]}
VLLM_RESULT = {"model_id": "meta-llama/Llama-3.1-8B-Instruct", "completed": 200, "failed": 0,
               "request_rate": 4.0, "request_throughput": 3.9, "total_input_tokens": 51200,
               "total_output_tokens": 25600, "p99_ttft_ms": 420.0, "p99_tpot_ms": 38.0,
               "mean_ttft_ms": 200.0, "mean_tpot_ms": 30.0}
NAMES = ["x\ntouch INJECTED", "a\rb", "x\u2028y", "$(touch INJECTED)", "'; touch INJECTED; '", "`id`",
         "[/]", "-rf", "a\x00b", "\x85", "x" * 300]
HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10 ** 40, max_value=10 ** 40),
    st.sampled_from([0, -1, 1, 10 ** 9, 2 ** 63, 1e-320, 1e20, 1e308, 0.5, float("inf"), float("nan"), "",
                     "L4", "llama-3.1-8b", "fp8", "auto", [], {}, [0, 1], [-1], [True], ["0"], [1.5],
                     *NAMES]),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
_dirs = itertools.count()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def fresh(tmp_path: Path) -> Path:
    """A new folder per hypothesis example (tmp_path is shared by all of them)."""
    d = tmp_path / f"ex{next(_dirs)}"
    d.mkdir()
    return d


def clean(r, allowed=(0, 2, 3)):
    """The contract of every command on bad input."""
    text = r.output + (r.stderr if r.stderr_bytes is not None else "")
    assert "Traceback" not in text, text[-2000:]
    assert "internal error" not in text, text[-2000:]
    assert r.exit_code in allowed, (r.exit_code, text[-2000:], r.exception)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    if r.exit_code in (2, 3):
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert len(lines[0]) < 600, lines[0]
    return r


def mutated(good):
    """Up to three fields of `good` replaced by hostile values or deleted (tests/helpers.py)."""
    return mutated_doc(good, HOSTILE)


def dump(doc) -> str:
    try:
        return json.dumps(doc)
    except ValueError:
        return json.dumps(doc, allow_nan=True)


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, dict]:
    """Good plans to corrupt: loose GPUs, instance nodes, and a sharing plan."""
    d = tmp_path_factory.mktemp("plans")
    out = {}
    for key, workload, extra in (("gpus", GOOD, ()), ("nodes", NODES, ()), ("shared", GOOD, ("--share-gpus",))):
        w, p = d / f"{key}-w.json", d / f"{key}.json"
        w.write_text(json.dumps(workload))
        r = run("plan", w, "--out", p, *FAST, *extra)
        assert r.exit_code == 0, r.output
        out[key] = json.loads(p.read_text())
    return out


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


BREAKS = re.compile("[\r\x85\u2028\u2029\x00-\x08\x0b-\x1f]")  # what a YAML or shell reader may take as a line end


def shell_words(text: str) -> list[str]:
    return shlex.split(text, comments=True)


def unquoted_substitution(text: str) -> bool:
    """Whether `$(` or a backtick stands outside single quotes (outside comments): a command the
    shell would run. shlex.quote puts every name in single quotes."""
    single = double = False
    i = 0
    while i < len(text):
        c = text[i]
        if single:
            single = c != "'"
        elif c == "\\":
            i += 1
        elif c == "'" and not double:
            single = True
        elif c == '"':
            double = not double
        elif c == "#" and not double and (i == 0 or text[i - 1] in " \t\n"):
            i = text.find("\n", i)
            if i < 0:
                break
        elif c == "`" or text.startswith("$(", i):
            return True
        i += 1
    return False


def assert_safe_export(folder: Path) -> None:
    """Scripts parse and no word of them is an injected command; YAML and JSON load; no comment line
    holds a character that could end it. Names inside quoted arguments may hold anything."""
    for name, data in tree(folder).items():
        text = data.decode("utf-8")
        for line in text.split("\n"):
            if line.lstrip().startswith("#"):
                assert not BREAKS.search(line), (name, line[:200])
        if name.endswith(".sh"):
            r = subprocess.run(["sh", "-n", str(folder / name)], capture_output=True, text=True)
            assert r.returncode == 0, (name, r.stderr)
            words = shell_words(text)
            assert "touch" not in words and not unquoted_substitution(text), name
        elif name.endswith((".yaml", ".yml")):
            for doc in yaml.safe_load_all(text):
                for key in ("setup", "run"):
                    if isinstance(doc, dict) and isinstance(doc.get(key), str):
                        assert "touch" not in shell_words(doc[key]), (name, key)
                        assert not unquoted_substitution(doc[key]), (name, key)
        elif name.endswith(".json"):
            json.loads(text)


# -- export ------------------------------------------------------------------------------------------

@SETTINGS
@given(data=st.data(), key=st.sampled_from(["gpus", "nodes", "shared"]))
def test_fuzz_export(tmp_path, plans, data, key):
    d = fresh(tmp_path)
    p = d / "p.json"
    p.write_text(dump(data.draw(mutated(plans[key]))))
    out = d / "export"
    r = clean(run("export", p, "--format", "all", "--out", out))
    if r.exit_code == 0:
        assert_safe_export(out)
    else:
        assert not out.exists(), f"{out} written on exit {r.exit_code}"


@SETTINGS
@given(data=st.data(), key=st.sampled_from(["gpus", "nodes"]))
def test_fuzz_export_on_error_keeps_the_last_export(tmp_path, plans, data, key):
    d = fresh(tmp_path)
    good, p, out = d / "good.json", d / "p.json", d / "export"
    good.write_text(json.dumps(plans[key]))
    assert run("export", good, "--out", out).exit_code == 0
    before = tree(out)
    p.write_text(dump(data.draw(mutated(plans[key]))))
    r = clean(run("export", p, "--format", "all", "--out", out))
    if r.exit_code != 0:
        assert tree(out) == before


@pytest.mark.parametrize("name", NAMES)
def test_export_of_hostile_names_is_refused_or_escaped(tmp_path, plans, name):
    for key in ("gpus", "nodes", "shared"):
        doc = json.loads(json.dumps(plans[key]))
        for g in doc.get("replicas", []):
            g["model"] = name
        for s in doc.get("shared") or []:
            s["models"][0]["model"] = name
        for nd in doc.get("nodes") or []:
            nd["instance"] = name
        p, out = tmp_path / f"{key}.json", tmp_path / f"out-{key}"
        p.write_text(json.dumps(doc))
        r = clean(run("export", p, "--out", out))
        if r.exit_code == 0:
            assert_safe_export(out)
        else:
            assert not out.exists()


@SETTINGS
@given(data=st.binary(max_size=40))
def test_fuzz_export_bytes(tmp_path, data):
    d = fresh(tmp_path)
    p, out = d / "p.json", d / "export"
    p.write_bytes(data)
    clean(run("export", p, "--out", out), allowed=(2,))
    assert not out.exists()


# -- validate ----------------------------------------------------------------------------------------

VALIDATE = ("--endpoint", "http://127.0.0.1:9", "--gpu-name", "L4", "--duration", "0.5", "--drain", "0", "-q")


@SETTINGS
@given(data=st.data(), key=st.sampled_from(["gpus", "nodes", "shared"]))
def test_fuzz_validate_plans(tmp_path, plans, data, key):
    d = fresh(tmp_path)
    p, w, report = d / "p.json", d / "w.json", d / "r.json"
    p.write_text(dump(data.draw(mutated(plans[key]))))
    w.write_text(json.dumps(NODES if key == "nodes" else GOOD))
    r = clean(run("validate", p, w, *VALIDATE, "--report", report), allowed=(0, 1, 2))
    if r.exit_code == 2:
        assert not report.exists()


@SETTINGS
@given(doc=mutated(GOOD))
def test_fuzz_validate_workloads(tmp_path, plans, doc):
    d = fresh(tmp_path)
    p, w, report = d / "p.json", d / "w.json", d / "r.json"
    p.write_text(json.dumps(plans["gpus"]))
    w.write_text(dump(doc))
    r = clean(run("validate", p, w, *VALIDATE, "--report", report), allowed=(0, 1, 2))
    if r.exit_code == 2:
        assert not report.exists()


# -- profile import-vllm -----------------------------------------------------------------------------

def import_vllm(d: Path, *files):
    out = d / "profiles.json"
    r = clean(run("profile", "import-vllm", *files, "--gpu", "L4", "--out", out), allowed=(0, 2))
    if r.exit_code == 0:
        doc = json.loads(out.read_text())
        assert isinstance(doc["entries"], list)
    else:
        assert not out.exists(), f"{out} written on exit {r.exit_code}"
    return r


@SETTINGS
@given(doc=mutated(VLLM_RESULT))
def test_fuzz_import_vllm_json(tmp_path, doc):
    d = fresh(tmp_path)
    f = d / "r.json"
    f.write_text(dump(doc))
    import_vllm(d, f)


@SETTINGS
@given(docs=st.lists(mutated(VLLM_RESULT), min_size=1, max_size=3), good_first=st.booleans())
def test_fuzz_import_vllm_jsonl(tmp_path, docs, good_first):
    d = fresh(tmp_path)
    f = d / "r.jsonl"
    f.write_text("".join(dump(x) + "\n" for x in ([VLLM_RESULT] if good_first else []) + docs))
    import_vllm(d, f)


@SETTINGS
@given(data=st.binary(max_size=60), prefix=st.sampled_from([b"", json.dumps(VLLM_RESULT).encode() + b"\n"]))
def test_fuzz_import_vllm_bytes(tmp_path, data, prefix):
    d = fresh(tmp_path)
    f = d / "r.json"
    f.write_bytes(prefix + data)
    import_vllm(d, f)


@pytest.mark.parametrize("content", [
    b"[" * 100_000 + b"]" * 100_000, json.dumps(VLLM_RESULT).replace("200", "1" + "0" * 5000).encode(),
    json.dumps(VLLM_RESULT).replace("3.9", "1e999").encode(), json.dumps(VLLM_RESULT).encode("utf-16"),
    (json.dumps(VLLM_RESULT) + "\n" + "[" * 50_000 + "\n").encode(),
])
def test_import_vllm_named_bad_files(tmp_path, content):
    f = tmp_path / "r.json"
    f.write_bytes(content)
    assert import_vllm(tmp_path, f).exit_code == 2


# -- sweep -------------------------------------------------------------------------------------------

SWEEP = ("--time-limit", "2", "-q", "--format", "json")
NUMBER = st.one_of(st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e308", "1e-308", "1e-320", "1e400",
                                    "", ",", " ", "1,,2", "x", "0x10", "1_0", "\n", "1e6", "1e9"]),
                   st.floats().map(repr), st.text(alphabet="0123456789.,e-+ ", max_size=8))


@SETTINGS
@given(scale=NUMBER, tpot=st.one_of(st.none(), NUMBER))
def test_fuzz_sweep_lists(tmp_path, scale, tpot):
    w = tmp_path / "w.json"
    w.write_text(json.dumps(GOOD))
    clean(run("sweep", w, "--scale", scale, *(("--tpot-ms", tpot) if tpot is not None else ()), *SWEEP))


@settings(SETTINGS, max_examples=15 * SCALE)
@given(doc=mutated(GOOD))
def test_fuzz_sweep_workloads(tmp_path, doc):
    d = fresh(tmp_path)
    w = d / "w.json"
    w.write_text(dump(doc))
    clean(run("sweep", w, "--scale", "0.5,2", *SWEEP))
