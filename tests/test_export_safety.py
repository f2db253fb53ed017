"""Exports cannot inject: hostile model, GPU, instance and region names give scripts that parse
(`sh -n`), run with a stub `vllm` without running anything else, YAML that loads back with the
names intact, and no comment line a name could break out of."""
import json
import os
import re
import shlex
import shutil
import subprocess

import pytest
import yaml

from gpumix.planner.errors import InputError
from gpumix.planner.export import export

HOSTILE = [
    "x\ntouch INJECTED",
    "x\r\ntouch INJECTED",
    "$(touch INJECTED)",
    "`touch INJECTED`",
    "a'b; touch INJECTED; '",
    'a"b$(touch INJECTED)"',
    "a # b\n#!/bin/sh\ntouch INJECTED",
    "a\u2028touch INJECTED",
    "a\u2029touch INJECTED\u0085touch INJECTED",
    "[/] [bold]x",
    "a\x01\x1b[31mb\ttouch INJECTED",  # a NUL is refused (tests/test_campaign14.py)
    "é" * 500 + "\ntouch INJECTED",
]
ROUTES = [{"input_tokens": 512, "output_tokens": 128, "rps": 1.0}]


def node_plan(name: str) -> dict:
    return {"replicas": [{"model": name, "gpu": "L4", "tp": 1, "count": 2, "routes": ROUTES, "spot": True},
                         {"model": "b" + name, "gpu": "MI300X", "tp": 2, "count": 1, "routes": ROUTES}],
            "nodes": [{"instance": "g6." + name, "region": "us-" + name, "gpu": "L4", "gpus": 1, "spot": True,
                       "price_per_hour": 1.0, "replicas": [{"model": name, "tp": 1, "gpu_ids": [0]}]},
                      {"instance": "g6." + name, "region": "us-" + name, "gpu": "L4", "gpus": 1, "spot": True,
                       "price_per_hour": 1.0, "replicas": [{"model": name, "tp": 1, "gpu_ids": [0]}]},
                      {"instance": "mi." + name, "region": "eu", "gpu": "MI300X", "gpus": 8, "spot": False,
                       "price_per_hour": 9.0, "replicas": [{"model": "b" + name, "tp": 2, "gpu_ids": [4, 5]}]}]}


def shared_plan(name: str) -> dict:
    return {"replicas": [{"model": name, "gpu": "L4\n" + name, "tp": 1, "count": 1, "routes": ROUTES}],
            "shared": [{"gpu": "L4", "tp": 1, "count": 2, "models": [
                {"model": "s1" + name, "memory_gb_per_gpu": 8.0, "routes": ROUTES},
                {"model": "s2" + name, "memory_gb_per_gpu": 8.0, "routes": ROUTES}]}]}


@pytest.fixture(scope="module")
def stub_path(tmp_path_factory):
    bin_dir = tmp_path_factory.mktemp("bin")
    for cmd in ("vllm", "pip"):  # what the scripts run (SkyPilot setup: pip install vllm)
        stub = bin_dir / cmd
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"


def scripts(files: dict) -> dict[str, str]:
    """Every shell text an export holds: vllm scripts, k8s `sh -c` commands, SkyPilot setup and run."""
    out = {p: t for p, t in files.items() if p.endswith(".sh")}
    for p, t in files.items():
        if not p.endswith(".yaml"):
            continue
        doc = yaml.safe_load(t)
        for key in ("setup", "run"):
            if doc.get(key):
                out[f"{p}:{key}"] = doc[key]
        if doc.get("kind") == "Deployment":
            c = doc["spec"]["template"]["spec"]["containers"][0]
            if c["command"][:2] == ["sh", "-c"]:
                out[f"{p}:command"] = c["command"][2]
    return out


def served_names(files: dict) -> set[str]:
    """--served-model-name values as the YAML carries them (k8s args lists)."""
    names = set()
    for p, t in files.items():
        if p.startswith("k8s/") and p.endswith("deployment.yaml"):
            c = yaml.safe_load(t)["spec"]["template"]["spec"]["containers"][0]
            if "args" in c:
                names.add(c["args"][c["args"].index("--served-model-name") + 1])
    return names


def comments_are_single_lines(text: str) -> None:
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            assert "INJECTED" not in line or line.rstrip("\n").count("\n") == 0
    # no character a YAML or shell reader takes as a line break is left inside a comment
    for line in text.split("\n"):
        if line.startswith("#"):
            assert not re.search("[\r\x85\u2028\u2029\x00-\x08\x0b-\x1f]", line), repr(line)


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("make", [node_plan, shared_plan])
def test_hostile_names_do_not_inject(name, make, stub_path, tmp_path):
    plan = make(name)
    files = export(plan, ["vllm", "k8s", "skypilot"])
    for path, text in files.items():
        comments_are_single_lines(text)
        if path.endswith(".yaml"):
            assert isinstance(yaml.safe_load(text), dict), path
    shells = scripts(files)
    assert any(p.startswith("vllm/") for p in shells)
    env = {**os.environ, "PATH": stub_path}
    for path, text in shells.items():
        script = tmp_path / "s.sh"
        script.write_text(text)
        r = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
        assert r.returncode == 0, (path, r.stderr)
        r = subprocess.run(["sh", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, (path, r.stderr)
        assert not list(tmp_path.glob("INJECTED*")), (path, text)
    assert {g["model"] for g in plan["replicas"]} <= served_names(files)
    weights = json.loads(files["router-weights.json"])["models"]
    assert {g["model"] for g in plan["replicas"]} <= set(weights)


def test_yaml_names_round_trip_exactly():
    name = "a'b\"c # d\u2028e\nf: [g] {h} &i *j !k |l >m %n @o `p"
    files = export(shared_plan(name), ["k8s", "skypilot"])
    assert served_names(files) == {name}
    task = yaml.safe_load(next(t for p, t in files.items() if p.startswith("skypilot/shared")))
    assert f"--served-model-name {'s1' + name}" not in task["run"]  # quoted in the script, not bare
    words = shlex.split(task["run"], comments=True)
    assert words[words.index("--served-model-name") + 1] == "s1" + name


@pytest.mark.parametrize("bad", ["--trust-remote-code", "-x", " "])
def test_a_model_name_that_vllm_would_read_as_an_option_is_refused(bad):
    with pytest.raises(InputError, match="model"):
        export({"replicas": [{"model": bad, "gpu": "L4", "tp": 1, "count": 1, "routes": ROUTES}]}, ["vllm"])


@pytest.mark.parametrize("ids", [["0; touch INJECTED"], [-1], [True], "0", []])
def test_gpu_ids_must_be_integers(ids):
    plan = node_plan("m")
    plan["nodes"][0]["replicas"][0]["gpu_ids"] = ids
    with pytest.raises(InputError, match="gpu_ids"):
        export(plan, ["vllm"])


def test_long_names_are_cut_in_comments():
    files = export(node_plan("m" * 5000), ["vllm", "k8s"])
    for text in files.values():
        for line in text.splitlines():
            if line.startswith("#"):
                assert len(line) <= 210


def test_sh_is_there():
    assert shutil.which("sh")


def test_comments_show_line_breaks_as_escapes():
    from gpumix.planner.export.groups import comment
    assert comment("x\ntouch\u2028y\x85z\x1b[31m") == "# x\\ntouch\\u2028y\\x85z\\x1b[31m\n"
