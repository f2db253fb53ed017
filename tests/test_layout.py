"""The package layout: one import package `gpumix`, layers that import downwards only
(docs/architecture.md), and a wheel that holds `gpumix/` and its dist-info alone."""
from __future__ import annotations

import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("planner", "profiler", "solvers", "cli", "data")
# what each layer may import from gpumix, besides itself
ALLOWED = {
    "data": set(),
    "planner": {"data"},
    "profiler": {"planner", "data"},
    "solvers": {"planner", "data"},
    "cli": {"planner", "profiler", "solvers", "data"},
}


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ["gpumix", *path.relative_to(ROOT).parent.parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # `from gpumix import cli`
    return found


def _package_files():
    for layer in LAYERS:
        for p in sorted((ROOT / layer).rglob("*.py")):
            yield layer, p


def test_layers_import_downwards_only():
    bad = []
    for layer, path in _package_files():
        for line, mod in _imports(path):
            parts = mod.split(".")
            if parts[0] in LAYERS:
                bad.append(f"{path.relative_to(ROOT)}:{line}: `{mod}` is not `gpumix.{mod}`")
            elif parts[0] == "gpumix" and len(parts) > 1 and parts[1] in LAYERS:
                target = parts[1]
                if target != layer and target not in ALLOWED[layer]:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {mod}")
    assert not bad, "\n".join(bad)


def test_the_layer_check_catches_an_upward_import(tmp_path):
    probe = ROOT / "planner" / "_probe_layer.py"
    try:
        probe.write_text("from gpumix.solvers.pipeline import plan_workload\n")
        with pytest.raises(AssertionError, match="planner imports gpumix.solvers.pipeline"):
            test_layers_import_downwards_only()
    finally:
        probe.unlink()


def test_tests_and_benches_use_the_package_name():
    bad = [f"{p.relative_to(ROOT)}:{line}: {mod}"
           for d in ("tests", "bench") for p in sorted((ROOT / d).rglob("*.py"))
           for line, mod in _imports(p) if mod.split(".")[0] in LAYERS]
    assert not bad, "\n".join(bad)


def test_version_comes_from_the_package_metadata():
    import gpumix

    assert gpumix.__version__ == importlib.metadata.version("gpumix")
    out = subprocess.run([sys.executable, "-m", "gpumix", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"gpumix {gpumix.__version__}"


def test_plan_runs_from_a_folder_with_colliding_names(tmp_path):
    """A data/ package and a cli.py in the working directory used to shadow gpumix's own."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("raise ImportError('the wrong data package')\n")
    (tmp_path / "cli.py").write_text("raise ImportError('the wrong cli module')\n")
    (tmp_path / "planner").mkdir()
    (tmp_path / "planner" / "__init__.py").write_text("raise ImportError('the wrong planner package')\n")
    script = Path(sys.executable).with_name("gpumix")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for cmd in ([str(script)], [sys.executable, "-m", "gpumix"]):
        out = subprocess.run([*cmd, "plan", "--format", "json", "--no-baseline", "-q"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert '"status": "optimal"' in out.stdout


def test_wheel_holds_only_the_gpumix_package(tmp_path):
    pytest.importorskip("setuptools", minversion="77")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.build_wheel(sys.argv[1]))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    version = importlib.metadata.version("gpumix")
    assert tops == {"gpumix", f"gpumix-{version}.dist-info"}, tops
    for must in ("gpumix/__init__.py", "gpumix/__main__.py", "gpumix/planner/problem.py", "gpumix/cli/app.py",
                 "gpumix/data/gpus.json", "gpumix/data/examples/workload.yaml",
                 f"gpumix-{version}.dist-info/licenses/LICENSE"):
        assert must in names, must
    # every package folder of the source tree is listed in pyproject's packages, so none is left out
    for _, path in _package_files():
        assert f"gpumix/{path.relative_to(ROOT).as_posix()}" in names, path
    assert not any(n.startswith(("gpumix/tests", "gpumix/bench", "gpumix/docs", "gpumix/scripts")) for n in names)
