"""Regression tests for what the independent boundary campaign of issue 14 found (kept outside the
repo: /work/campaign14), and for the issue's leftovers: every --out turns an OSError into one line
and exit 2 with nothing half-written, and a bucket longer than the model's context is refused."""
from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR

runner = CliRunner()

WORKLOAD = """
models:
  - name: llama-3.2-1b
    rate_rps: 2.0
    slo: {ttft_ms: 2000, tpot_ms: 100}
    buckets:
      - {input_tokens: 256, output_tokens: 128, share: 0.7}
      - {input_tokens: 1024, output_tokens: 256, share: 0.3}
gpus:
  - {name: L4, price_per_hour: 0.8, available: 8}
  - {name: A10G}
max_utilization: 0.9
"""
INSTANCES = WORKLOAD.replace("gpus:\n  - {name: L4, price_per_hour: 0.8, available: 8}\n  - {name: A10G}\n",
                             "instances: [g6.xlarge, {name: g5.xlarge, available: 4}]\n")


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error(r, code=2, *words):
    """Exit `code`, one `gpumix: error:` line on stderr holding `words`, no traceback."""
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpumix: error: "), r.stderr
    assert "Traceback" not in r.output and "internal error" not in r.output
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def tree(d: Path) -> dict:
    """Every path under d with its bytes (a folder or link as a marker): the state to compare."""
    out = {}
    for p in sorted(d.rglob("*")):
        rel = str(p.relative_to(d))
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


@pytest.fixture
def wl(tmp_path):
    p = tmp_path / "wl.yaml"
    p.write_text(WORKLOAD)
    return p


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """A loose-GPU plan and an instance plan, planned once."""
    d = tmp_path_factory.mktemp("plans")
    (d / "wl.yaml").write_text(WORKLOAD)
    (d / "inst.yaml").write_text(INSTANCES)
    for wl, out in (("wl.yaml", "plan.json"), ("inst.yaml", "inst.json")):
        r = invoke("plan", d / wl, "--out", d / out, "-q", "--no-baseline")
        assert r.exit_code == 0, r.output
    return d


def calib_table(path: Path) -> Path:
    """A throughput table with stored samples, as `gpumix profile` writes it (made-up timings)."""
    from gpumix.planner.catalog import load_catalog

    shape = load_catalog().model("llama-3.2-1b")
    samples = [{"kind": "prefill", "batch": 1, "tokens": n, "ms": 0.5 + n * 0.01} for n in (128, 1024, 4096)]
    samples += [{"kind": "decode", "batch": b, "tokens": c, "ms": 2 + 0.05 * b + 1e-5 * b * c}
                for b, c in ((1, 512), (8, 512), (8, 4096), (64, 2048))]
    run_shape = {k: v for k, v in shape.__dict__.items() if k not in ("name", "source")}
    path.write_text(json.dumps({"entries": [], "profiles": [{
        "model": "llama-3.2-1b", "gpu": "L4", "tp": 1, "provenance": {"dtype": "bf16"}, "run_shape": run_shape,
        "fit": {"prefill_ms": {"a": 1, "b": 0, "c": 0}, "decode_ms": {"a": 1, "b": 0, "c": 0}},
        "samples": samples}]}))
    return path


VLLM_RUN = {"model_id": "meta-llama/Llama-3.2-1B", "completed": 200, "failed": 0, "request_throughput": 4.9,
            "total_input_tokens": 51200, "total_output_tokens": 25600, "request_rate": 5.0,
            "p99_ttft_ms": 300.0, "p99_tpot_ms": 40.0}


# ---- campaign findings ---------------------------------------------------------------------------

def test_yaml_key_that_is_not_text_is_refused(tmp_path):
    """`~: 1` or `1: 2` in a workload: an internal error (TypeError comparing None and int) before."""
    for extra in ("~: 1\n", "1: 2\n", "models2: {3: x}\n"):
        p = tmp_path / "wl.yaml"
        p.write_text(WORKLOAD + extra)
        one_error(invoke("plan", p, "-q", "--out", tmp_path / "plan.json"), 2, "a key that is not text")
    assert not (tmp_path / "plan.json").exists()


def test_current_plan_with_a_list_for_a_name_is_bad_input(tmp_path, plans):
    """`--current` with `nodes[0].gpu: ["L4"]`: TypeError (unhashable list) before."""
    cur = json.loads((plans / "inst.json").read_text())
    cur["nodes"][0]["gpu"] = ["L4"]
    (tmp_path / "cur.json").write_text(json.dumps(cur))
    one_error(invoke("plan", plans / "inst.yaml", "--current", tmp_path / "cur.json", "-q",
                     "--out", tmp_path / "p.json"), 2, "nodes[0]", "gpu must be text")
    cur = json.loads((plans / "inst.json").read_text())
    del cur["nodes"]
    cur["replicas"][0]["model"] = {"a": 1}
    (tmp_path / "cur.json").write_text(json.dumps(cur))
    one_error(invoke("plan", plans / "inst.yaml", "--current", tmp_path / "cur.json", "-q"), 2, "replicas[0]")
    assert not (tmp_path / "p.json").exists()


def test_calibrate_reads_its_table_through_the_bounded_reader(tmp_path):
    """The profile table of `calibrate` and the existing --out of `import-vllm` were read with
    json.loads(read_text()): a FIFO hung, non-UTF-8 tracebacked, NaN was taken."""
    bad = tmp_path / "t.json"
    bad.write_bytes(b"\xff\xfe{}")
    one_error(invoke("profile", "calibrate", bad, "--out", tmp_path / "e.json"), 2, "UTF")
    os.mkfifo(tmp_path / "fifo.json")
    one_error(invoke("profile", "calibrate", tmp_path / "fifo.json", "--out", tmp_path / "e.json"), 2,
              "not a regular file")
    (tmp_path / "r.json").write_text(json.dumps(VLLM_RUN))
    out = tmp_path / "out.json"
    out.write_text('{"entries": [{"max_rps": NaN}]}')
    before = out.read_bytes()
    one_error(invoke("profile", "import-vllm", tmp_path / "r.json", "--gpu", "L4", "--out", out), 2, "finite")
    assert out.read_bytes() == before and not (tmp_path / "e.json").exists()


def test_calibrate_out_through_a_symlink_loop_is_bad_input(tmp_path):
    """Path.resolve() raised RuntimeError (an internal error) on a symlink loop."""
    table = calib_table(tmp_path / "t.json")
    os.symlink("loop.json", tmp_path / "loop.json")
    r = invoke("profile", "calibrate", table, "--out", tmp_path / "loop.json")
    one_error(r, 2, "--out")
    assert os.readlink(tmp_path / "loop.json") == "loop.json"


# ---- every --out: an OSError is bad input, one line, exit 2, nothing half-written ----------------

ERRNOS = [errno.EROFS, errno.ENOSPC, errno.EACCES, errno.EISDIR, errno.ENOTDIR]


def _fail_on_write(monkeypatch, where: str, code: int, under: Path):
    """Make the write step `where` raise OSError(code) for paths under `under`."""
    def boom(*a, **k):
        raise OSError(code, os.strerror(code))

    if where == "mkstemp":  # the temporary file (or, for export, folder) beside the target
        for name in ("mkstemp", "mkdtemp"):
            def make(*a, _orig=getattr(tempfile, name), **k):
                if str(k.get("dir", "")).startswith(str(under)):
                    boom()
                return _orig(*a, **k)
            monkeypatch.setattr(tempfile, name, make)
    elif where == "replace":
        orig_r = os.replace

        def replace(src, dst, *a, **k):
            if str(dst).startswith(str(under)):
                boom()
            return orig_r(src, dst, *a, **k)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "rename", replace)
    elif where == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    elif where == "mkdir":
        orig_m = os.mkdir

        def mkdir(p, *a, **k):
            if str(p).startswith(str(under)):
                boom()
            return orig_m(p, *a, **k)
        monkeypatch.setattr(os, "mkdir", mkdir)


def _out_commands(d: Path, plans: Path) -> dict:
    (d / "r.json").write_text(json.dumps(VLLM_RUN))
    calib_table(d / "t.json")
    return {
        "plan": (["plan", plans / "wl.yaml", "-q", "--no-baseline", "--out", d / "out" / "plan.json"], "--out"),
        "estimate": (["estimate", plans / "wl.yaml", "--out", d / "out" / "est.json"], "--out"),
        "export": (["export", plans / "inst.json", "--out", d / "out" / "exp"], "--out"),
        "import-vllm": (["profile", "import-vllm", d / "r.json", "--gpu", "L4", "--out", d / "out" / "p.json"], "--out"),
        "calibrate": (["profile", "calibrate", d / "t.json", "--out", d / "out" / "eff.json"], "--out"),
        "validate": (["validate", plans / "plan.json", plans / "wl.yaml", "--gpu-name", "L4", "--memory-budget", "0.01",
                      "--report", d / "out" / "rep.json"], None),
    }


@pytest.mark.parametrize("code", ERRNOS, ids=[errno.errorcode[c] for c in ERRNOS])
@pytest.mark.parametrize("where", ["mkstemp", "replace", "fsync"])
def test_every_out_turns_an_oserror_into_one_line(tmp_path, plans, monkeypatch, where, code):
    cmds = _out_commands(tmp_path, plans)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine\n")
    before = tree(tmp_path / "out")
    _fail_on_write(monkeypatch, where, code, tmp_path / "out")
    for name, (argv, option) in cmds.items():
        r = invoke(*argv)
        if name == "validate":  # refuses on memory before it writes; what matters: no traceback, one line
            assert r.exit_code == 2 and "Traceback" not in r.output and "internal error" not in r.output, r.output
            continue
        line = one_error(r, 2, option)
        assert os.strerror(code) in line, (name, line)
        assert tree(tmp_path / "out") == before, name


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.ENOTDIR])
def test_out_whose_folder_cannot_be_made(tmp_path, plans, monkeypatch, code):
    cmds = _out_commands(tmp_path, plans)
    _fail_on_write(monkeypatch, "mkdir", code, tmp_path / "out")
    for name, (argv, option) in cmds.items():
        if name == "validate":
            continue
        one_error(invoke(*argv), 2, option)
        assert not (tmp_path / "out").exists(), name


@pytest.mark.parametrize("where", ["mkstemp", "fsync"])
def test_out_leaves_no_folders_it_made_when_the_write_fails(tmp_path, plans, monkeypatch, where):
    cmds = _out_commands(tmp_path, plans)
    _fail_on_write(monkeypatch, where, errno.ENOSPC, tmp_path / "out")
    for name, (argv, option) in cmds.items():
        if name == "validate":
            continue
        argv = [*argv[:-1], tmp_path / "out" / "new" / "deeper" / Path(argv[-1]).name]
        one_error(invoke(*argv), 2, option)
        assert not (tmp_path / "out").exists(), name


def test_out_that_is_a_folder_or_under_a_file(tmp_path, plans):
    cmds = _out_commands(tmp_path, plans)
    (tmp_path / "afile").write_text("a file\n")
    for name, (argv, option) in cmds.items():
        if name in ("validate", "export"):
            continue
        argv = [*argv[:-1], tmp_path / "afile" / "x.json"]  # ENOTDIR
        one_error(invoke(*argv), 2, option)
        (tmp_path / "adir.json").mkdir(exist_ok=True)
        argv = [*argv[:-1], tmp_path / "adir.json"]  # EISDIR
        line = one_error(invoke(*argv), 2, str(tmp_path / "adir.json"))
        assert option in line or "not a regular file" in line, (name, line)  # merged into: read first
    assert (tmp_path / "afile").read_text() == "a file\n" and not any((tmp_path / "adir.json").iterdir())


def test_sweep_plot_is_written_atomically(tmp_path, wl, monkeypatch):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "sweep.png"
    plot.write_bytes(b"old")
    _fail_on_write(monkeypatch, "fsync", errno.ENOSPC, tmp_path)
    r = invoke("sweep", wl, "--scale", "1", "-q", "--time-limit", "10", "--plot", plot)
    assert r.exit_code == 2 and "No space left" in r.stderr and "Traceback" not in r.output, r.output
    assert plot.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["sweep.png", "wl.yaml"]


def test_sweep_plot_of_one_scale(tmp_path, wl):
    """`--scale 1 --plot` alone: x was the missing TPOT (None), a TypeError inside matplotlib."""
    pytest.importorskip("matplotlib")
    r = invoke("sweep", wl, "--scale", "1", "-q", "--time-limit", "10", "--plot", tmp_path / "one.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "one.png").read_bytes().startswith(b"\x89PNG")


# ---- token counts bounded by the model's context -------------------------------------------------

def test_bucket_longer_than_the_context_is_refused(tmp_path):
    p = tmp_path / "wl.yaml"
    p.write_text(WORKLOAD.replace("llama-3.2-1b", "phi-3-mini").replace("input_tokens: 1024, output_tokens: 256",
                                                                        "input_tokens: 4000, output_tokens: 200"))
    line = one_error(invoke("plan", p, "-q", "--out", tmp_path / "plan.json"), 2,
                     "models[0].buckets[1].output_tokens", "4,200", "4,096")
    assert "context" in line and not (tmp_path / "plan.json").exists()
    p.write_text(WORKLOAD.replace("llama-3.2-1b", "phi-3-mini").replace("input_tokens: 1024", "input_tokens: 5000"))
    one_error(invoke("check", DATA_DIR / "examples" / "split.yaml", p), 2, "models[0].buckets[1].input_tokens")


def test_context_from_a_config_json_and_its_rope_scaling(tmp_path):
    from gpumix.planner.shapes import shape_from_config

    cfg = json.loads((DATA_DIR / "models" / "mistral-7b.json").read_text())
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    assert shape_from_config(cfg, "m").max_context == 32768
    assert shape_from_config({**cfg, "rope_scaling": {"type": "linear", "factor": 4.0}}, "m").max_context == 131072
    assert shape_from_config({**cfg, "rope_scaling": {"rope_type": "yarn", "factor": 4.0,
                                                      "original_max_position_embeddings": 4096}}, "m").max_context == 32768
    assert shape_from_config({**cfg, "n_positions": 2048}, "m").max_context == 2048  # the smallest key wins
    assert shape_from_config({k: v for k, v in cfg.items() if k != "max_position_embeddings"}, "m").max_context is None
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "max_position_embeddings": 512}))
    p = tmp_path / "wl.yaml"
    p.write_text(WORKLOAD.replace("name: llama-3.2-1b", "name: mine\n    config: cfg.json"))
    one_error(invoke("plan", p, "-q"), 2, "models[0].buckets[1].input_tokens", "512")


def test_every_bundled_example_still_plans_within_its_context():
    from gpumix.planner.catalog import load_catalog
    from gpumix.planner.workload import load_workload

    catalog = load_catalog()
    assert all(m.max_context for m in catalog.models.values())  # every bundled config.json names one
    for name in ("workload.yaml", "longtail.yaml"):
        load_workload(DATA_DIR / "examples" / name, catalog)


def test_model_name_starting_with_a_dash_is_refused_when_read(tmp_path):
    """`name: "- item"` planned (exit 0), then `export` of that very plan refused it: the workload
    now refuses what the export would (a leading `-` reads as an option of `vllm serve`)."""
    p = tmp_path / "wl.yaml"
    p.write_text(WORKLOAD.replace("name: llama-3.2-1b", 'name: "- item"\n    config: '
                                  + str(DATA_DIR / "models" / "llama-3.2-1b.json")))
    one_error(invoke("plan", p, "-q", "--out", tmp_path / "plan.json"), 2, "models[0].name", "starts with '-'")
    assert not (tmp_path / "plan.json").exists()


@pytest.mark.parametrize("option,value", [("--gpu", "a\nb"), ("--gpu", "-L4"), ("--gpu", "x" * 201),
                                          ("--model", "m\x1b[31m"), ("--model", "-m")])
def test_import_vllm_names_from_options_are_names_the_planner_reads(tmp_path, option, value):
    """`--gpu 'a\\nb'` wrote a table entry the planner then refused: names from options get the
    planner's character set before anything is written."""
    (tmp_path / "r.json").write_text(json.dumps(VLLM_RUN))
    args = {"--gpu": "L4", option: value}
    r = invoke("profile", "import-vllm", tmp_path / "r.json", *[x for kv in args.items() for x in kv],
               "--out", tmp_path / "p.json")
    one_error(r, 2, option)
    assert not (tmp_path / "p.json").exists()


def test_export_refuses_a_name_holding_a_nul(tmp_path, plans):
    """Every other character of a plan's names is escaped where it goes; a NUL was written into the
    scripts raw (no shell argument can carry one). Nothing is written."""
    for old, where in (("llama-3.2-1b", ".model"), ('"L4"', "gpu")):
        text = (plans / "inst.json").read_text().replace(old, json.dumps(json.loads(old) + "\x00x")
                                                        if old.startswith('"') else old + "\\u0000x")
        (tmp_path / "plan.json").write_text(text)
        one_error(invoke("export", tmp_path / "plan.json", "--out", tmp_path / "exp"), 2, "NUL", where)
        assert not (tmp_path / "exp").exists()


def test_profile_run_out_turns_an_oserror_into_one_line(tmp_path, monkeypatch):
    """`gpumix profile --out` (a seconds-long CPU profile of a tiny model): a full disk at the write
    is one line, exit 2, no file and no folder left."""
    pytest.importorskip("torch")
    from helpers import TINY_CONFIG, tiny_profile_args

    (tmp_path / "tiny.json").write_text(json.dumps(TINY_CONFIG))
    (tmp_path / "wl.yaml").write_text(
        "models:\n  - {name: tiny, config: tiny.json, rate_rps: 1, slo: {ttft_ms: 1000, tpot_ms: 100},\n"
        "     buckets: [{input_tokens: 16, output_tokens: 8, share: 1}]}\ngpus: [{name: testcpu, price_per_hour: 0.1}]\n")
    _fail_on_write(monkeypatch, "mkstemp", errno.ENOSPC, tmp_path / "out")
    r = invoke("profile", tmp_path / "wl.yaml", "--out", tmp_path / "out" / "p.json", *tiny_profile_args("testcpu"))
    one_error(r, 2, "--out", "No space left")
    assert not (tmp_path / "out").exists()


def test_import_vllm_merges_only_into_a_table_the_planner_reads(tmp_path):
    """An existing --out whose entry had `output_tokens: ""`: ValueError in entry_key (an internal
    error). The table merged into is read as the planner reads it; nothing is changed."""
    (tmp_path / "r.json").write_text(json.dumps(VLLM_RUN))
    out = tmp_path / "p.json"
    entry = {"model": "m", "gpu": "L4", "tp": 1, "input_tokens": 8, "output_tokens": "", "max_rps": 1.0}
    out.write_text(json.dumps({"entries": [entry]}))
    before = out.read_bytes()
    one_error(invoke("profile", "import-vllm", tmp_path / "r.json", "--gpu", "L4", "--out", out), 2,
              "entries[0].output_tokens")
    assert out.read_bytes() == before


@pytest.mark.parametrize("mutate,field", [
    (lambda d: d["profiles"].append("x"), "profiles[1]"),
    (lambda d: d["profiles"][0].update(tp="2"), "profiles[0].tp"),
    (lambda d: d["profiles"][0].update(gpu=["L4"]), "profiles[0].gpu"),
    (lambda d: d["profiles"][0]["run_shape"].update(hidden_size=-4), "profiles[0].run_shape.hidden_size"),
    (lambda d: d["profiles"][0]["samples"][0].update(ms=0), "profiles[0].samples[0].ms"),
    (lambda d: d["profiles"][0]["fit"].pop("decode_ms"), "profiles[0].fit.decode_ms"),
    (lambda d: d["profiles"][0].update(provenance=[]), "profiles[0].provenance.dtype"),
    (lambda d: d.update(profiles={"a": 1}), "profiles"),
    (lambda d: d.update(calibration=[]), "calibration"),
])
def test_calibrate_checks_every_record_before_it_writes(tmp_path, mutate, field):
    """Records of the wrong shape were AttributeError, ValueError or KeyError (internal errors)."""
    table = calib_table(tmp_path / "t.json")
    doc = json.loads(table.read_text())
    mutate(doc)
    table.write_text(json.dumps(doc))
    one_error(invoke("profile", "calibrate", table, "--out", tmp_path / "e.json"), 2, field)
    assert not (tmp_path / "e.json").exists()


def test_calibrate_of_two_gpu_types_writes_nothing_when_one_fails(tmp_path):
    """The first GPU type was written before the second (uncatalogued, no spec) failed."""
    table = calib_table(tmp_path / "t.json")
    doc = json.loads(table.read_text())
    doc["profiles"].append({**doc["profiles"][0], "gpu": "zz-uncatalogued"})
    table.write_text(json.dumps(doc))
    one_error(invoke("profile", "calibrate", table, "--out", tmp_path / "e.json"), 2, "zz-uncatalogued")
    assert not (tmp_path / "e.json").exists()


def test_calibrate_with_gpu_checks_the_records_too(tmp_path):
    """`--gpu L4` skipped the check: `tp: []` in a record was a TypeError in int()."""
    table = calib_table(tmp_path / "t.json")
    doc = json.loads(table.read_text())
    doc["profiles"][0]["tp"] = []
    table.write_text(json.dumps(doc))
    one_error(invoke("profile", "calibrate", table, "--gpu", "L4", "--out", tmp_path / "e.json"), 2,
              "profiles[0].tp")
    assert not (tmp_path / "e.json").exists()


@pytest.mark.parametrize("name", ["L" * 300 + ".json", "a" * 200 + "/" + "b" * 300 + ".json"])
def test_a_config_path_the_os_refuses_is_not_found_not_a_crash(tmp_path, name):
    """Path.exists() raises ENAMETOOLONG on Python 3.11: a 300-character config name crashed plan."""
    wl = tmp_path / "wl.yaml"
    wl.write_text(WORKLOAD.replace("  - name: llama-3.2-1b\n", f"  - name: custom\n    config: {name}\n"))
    r = invoke("plan", wl, "--out", tmp_path / "plan.json", "-q")
    assert r.exit_code == 2, r.output
    assert "models[0].config: config file not found" in r.output and "internal error" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "plan.json").exists()
