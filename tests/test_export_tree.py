"""gpumix export writes its tree atomically: staged beside the target, swapped in, a manifest of
what it wrote; re-exports remove only their own stale files; a failure leaves the old tree as it
was; --out through a symlink writes the link's target; modes follow the umask; write errors exit 2."""
import errno
import json
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.planner.export import tree as tree_mod
from gpumix.planner.export.tree import MANIFEST, sha256, write_tree
from gpumix.planner.plan import write_atomic

runner = CliRunner()
ROUTES = [{"input_tokens": 512, "output_tokens": 128, "rps": 1.0}]


def plan(*models):
    return {"replicas": [{"model": m, "gpu": "L4", "tp": 1, "count": 1, "routes": ROUTES} for m in models]}


def export(tmp_path, doc, out, *extra):
    p = tmp_path / "plan.json"
    p.write_text(json.dumps(doc))
    return runner.invoke(app, ["export", str(p), "-o", str(out), *extra])


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_manifest_lists_every_file_with_its_hash(tmp_path, umask022):
    out = tmp_path / "out"
    r = export(tmp_path, plan("llama-3.1-8b", "phi-3-mini"), out)
    assert r.exit_code == 0, r.output
    doc = json.loads((out / MANIFEST).read_text())
    listed = {f["path"]: f["sha256"] for f in doc["files"]}
    on_disk = {k: v for k, v in snapshot(out).items() if k != MANIFEST}
    assert set(listed) == set(on_disk) and all(listed[k] == sha256(v) for k, v in on_disk.items())
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no stage left behind
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    for p in out.rglob("*"):
        want = 0o755 if p.is_dir() or p.suffix == ".sh" else 0o644
        assert stat.S_IMODE(p.stat().st_mode) == want, p


def test_modes_follow_a_strict_umask(tmp_path):
    old = os.umask(0o077)
    try:
        write_tree(tmp_path / "t", {"vllm/a.sh": "#!/bin/sh\n", "r.json": "{}\n"})
        write_atomic(tmp_path / "plan.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "t" / "vllm" / "a.sh").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "t" / "r.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "plan.json").stat().st_mode) == 0o600


def test_write_atomic_mode_is_not_0600(tmp_path, umask022):
    write_atomic(tmp_path / "p.json", "{}\n")
    assert stat.S_IMODE((tmp_path / "p.json").stat().st_mode) == 0o644


def test_smaller_plan_removes_stale_files_and_keeps_the_users(tmp_path):
    out = tmp_path / "out"
    assert export(tmp_path, plan("llama-3.1-8b", "phi-3-mini"), out).exit_code == 0
    stale = [k for k in snapshot(out) if "phi-3-mini" in k]
    assert stale
    (out / "notes.txt").write_text("mine")
    (out / "k8s" / "ingress.yaml").write_text("kind: Ingress\n")
    r = export(tmp_path, plan("llama-3.1-8b"), out)
    assert r.exit_code == 0, r.output
    files = snapshot(out)
    assert not [k for k in files if "phi-3-mini" in k]
    assert files["notes.txt"] == b"mine" and files["k8s/ingress.yaml"] == b"kind: Ingress\n"
    listed = {f["path"] for f in json.loads(files[MANIFEST])["files"]}
    assert "notes.txt" not in listed and not [k for k in listed if "phi" in k]


def test_an_edited_stale_file_is_kept_and_named(tmp_path):
    out = tmp_path / "out"
    assert export(tmp_path, plan("llama-3.1-8b", "phi-3-mini"), out).exit_code == 0
    edited = next(k for k in snapshot(out) if k.startswith("k8s/phi-3-mini"))
    (out / edited).write_text("# my change\n")
    r = export(tmp_path, plan("llama-3.1-8b"), out)
    assert r.exit_code == 0, r.output
    assert (out / edited).read_text() == "# my change\n" and edited in r.output


def test_a_forged_manifest_cannot_remove_files_outside_the_tree(tmp_path):
    out = tmp_path / "out"
    assert export(tmp_path, plan("llama-3.1-8b"), out).exit_code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    doc = json.loads((out / MANIFEST).read_text())
    doc["files"] += [{"path": p, "sha256": sha256(b"keep")}
                     for p in ("../victim.txt", str(victim), "a/../../victim.txt")]
    (out / MANIFEST).write_text(json.dumps(doc))
    (out / "link.txt").symlink_to(victim)
    doc["files"].append({"path": "link.txt", "sha256": sha256(b"keep")})
    (out / MANIFEST).write_text(json.dumps(doc))
    assert export(tmp_path, plan("llama-3.1-8b"), out).exit_code == 0
    assert victim.read_text() == "keep" and (out / "link.txt").is_symlink()


@pytest.mark.parametrize("stage", ["write", "commit"])
def test_a_failure_leaves_the_old_tree_untouched(tmp_path, monkeypatch, stage):
    out = tmp_path / "out"
    assert export(tmp_path, plan("llama-3.1-8b", "phi-3-mini"), out).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    calls = {"n": 0}
    if stage == "write":
        real = tree_mod._write

        def failing(path, data, executable):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
            real(path, data, executable)
        monkeypatch.setattr(tree_mod, "_write", failing)
    else:
        real = os.replace

        def failing(src, dst):
            calls["n"] += 1
            if calls["n"] == 5:
                raise OSError(errno.EIO, "Input/output error")
            real(src, dst)
        monkeypatch.setattr(tree_mod.os, "replace", failing)
    r = export(tmp_path, plan("qwen2.5-14b"), out)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "--out" in r.output and "Traceback" not in r.output
    assert snapshot(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]


def test_failure_on_a_new_target_writes_nothing(tmp_path, monkeypatch):
    def failing(path, data, executable):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(tree_mod, "_write", failing)
    r = export(tmp_path, plan("llama-3.1-8b"), tmp_path / "new")
    assert r.exit_code == 2 and "Read-only file system" in r.output
    assert not (tmp_path / "new").exists() and [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_out_through_a_symlink_writes_its_target(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    r = export(tmp_path, plan("llama-3.1-8b"), link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and (real / MANIFEST).is_file() and (real / "router-weights.json").is_file()


def test_write_atomic_through_a_symlink_replaces_the_target(tmp_path):
    target = tmp_path / "plan.json"
    target.write_text("old")
    link = tmp_path / "current.json"
    link.symlink_to(target)
    write_atomic(link, "new")
    assert link.is_symlink() and target.read_text() == "new"


def test_out_is_a_file_or_blocked_path_exits_2(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = export(tmp_path, plan("llama-3.1-8b"), f)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "--out" in r.output
    assert f.read_text() == "x"
    out = tmp_path / "out"
    (out / "router-weights.json").mkdir(parents=True)  # a folder where a file goes
    r = export(tmp_path, plan("llama-3.1-8b"), out)
    assert r.exit_code == 2 and "--out" in r.output
    assert [p.name for p in out.iterdir()] == ["router-weights.json"]


def test_spot_label_option(tmp_path):
    import yaml

    doc = plan("llama-3.1-8b")
    doc["replicas"][0]["spot"] = True
    out = tmp_path / "out"
    r = export(tmp_path, doc, out, "-f", "k8s", "--spot-label", "eks.amazonaws.com/capacityType=SPOT")
    assert r.exit_code == 0, r.output
    dep = yaml.safe_load(next((out / "k8s").glob("*-spot-deployment.yaml")).read_text())
    pod = dep["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["eks.amazonaws.com/capacityType"] == "SPOT"
    assert pod["tolerations"] == [{"key": "eks.amazonaws.com/capacityType", "operator": "Equal", "value": "SPOT",
                                   "effect": "NoSchedule"}]
    r = export(tmp_path, doc, tmp_path / "o2", "--spot-label", "no equals")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1


def test_stage_inside_an_existing_target_when_its_parent_is_not_writable(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("x")
    real = tree_mod.tempfile.mkdtemp

    def mkdtemp(prefix="", suffix="", dir=None):
        if Path(dir) == tmp_path:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(prefix=prefix, suffix=suffix, dir=dir)
    monkeypatch.setattr(tree_mod.tempfile, "mkdtemp", mkdtemp)
    r = export(tmp_path, plan("llama-3.1-8b"), out)
    assert r.exit_code == 0, r.output
    assert (out / MANIFEST).is_file() and (out / "mine.txt").read_text() == "x"
    assert not [p for p in out.iterdir() if p.name.startswith(".gpumix-export.") and p.is_dir()]
