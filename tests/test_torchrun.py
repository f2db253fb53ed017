"""`torchrun -m gpumix ...`: the documented multi-process TP entry point, on CPU (gloo)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TINY_CONFIG, tiny_profile_args

pytest.importorskip("torch")


def test_torchrun_profiles_at_tp2_through_python_m_gpumix(tmp_path):
    (tmp_path / "cfg.json").write_text(json.dumps(TINY_CONFIG))
    (tmp_path / "wl.yaml").write_text(
        "models:\n  - name: tiny\n    config: cfg.json\n    rate_rps: 1\n    slo: {ttft_ms: 1000, tpot_ms: 100}\n"
        "    buckets: [{input_tokens: 32, output_tokens: 16, share: 1.0}]\n")
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "gpumix", "profile", "run",
                          "wl.yaml", "--tp", "2", "--out", "p.json", *tiny_profile_args("CPU-test")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads((tmp_path / "p.json").read_text())  # rank 0 wrote it, once
    assert [(e["model"], e["tp"], e["source"]) for e in doc["entries"]] == [("tiny", 2, "measured")]
    assert doc["entries"][0]["max_rps"] > 0
