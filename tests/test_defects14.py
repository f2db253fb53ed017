"""Regression tests for the defects of issue 14 found trying gpumix as a new user would."""
import json

import pytest
from typer.testing import CliRunner

from gpumix.cli.app import app
from gpumix.data import DATA_DIR

runner = CliRunner()


# ---- a per-GPU-type cap together with instances

CAPPED = """
models:
  - name: llama8b
    config: {config}
    rate_rps: {rate}
    slo: {{ttft_ms: 2000, tpot_ms: 100}}
    buckets: [{{input_tokens: 512, output_tokens: 128, share: 1.0}}]
gpus: [{{name: L4, available: 12}}, {{name: A100-80GB}}]
instances:
  - {{name: l4x1-a, gpu: L4, gpus: 1, price_per_hour: 0.80, region: r1}}
  - {{name: l4x4-a, gpu: L4, gpus: 4, price_per_hour: 3.00, region: r1}}
  - {{name: l4x1-b, gpu: L4, gpus: 1, price_per_hour: 0.70, region: r2}}
  - {{name: l4x4-b, gpu: L4, gpus: 4, price_per_hour: 2.90, region: r2}}
  - {{name: a100x8, gpu: A100-80GB, gpus: 8, price_per_hour: 40.0, region: r1}}
"""


@pytest.mark.parametrize("rate", [40, 100])
def test_gpu_type_cap_with_instances_is_honoured(tmp_path, rate):
    """It used to fail the checker (C3 L4: plan uses 18 GPUs, 12 available): stage 2 and the node
    search ignored the cap of the workload's `gpus` and reported a cost below their own bound."""
    w = tmp_path / "w.yaml"
    w.write_text(CAPPED.format(config=DATA_DIR / "models" / "llama-3.1-8b.json", rate=rate))
    r = runner.invoke(app, ["plan", str(w), "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    rented = sum(nd["gpus"] if "gpus" in nd else 0 for nd in plan["nodes"] if nd["gpu"] == "L4")
    assert rented <= 12
    assert plan["cost_per_hour"] >= plan["lower_bound_per_hour"] - 1e-9
