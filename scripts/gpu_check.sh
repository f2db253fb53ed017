#!/usr/bin/env bash
# GPU check for the torch runtime and `gpumix profile` (issue 5). Run on a machine with one GPU:
#   bash scripts/gpu_check.sh [GPU_NAME]        # GPU_NAME: catalog name for the entries, e.g. H200
# 1. batch-1 decode of a Llama-3.1-8B-shaped model in bf16: tokens/s, achieved GB/s vs copy GB/s
# 2. `gpumix profile` of that model at TP 1 (bf16, full size): fitted latency model, held-out error,
#    entries for the bundled example's llama-3.1-8b buckets, and the error of the analytic
#    (roofline) estimate before and after calibration.
# Budget: about 8 minutes on an H100/H200 (the sweep is sized for that); results go to $OUT or ./gpu_check.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_check}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
GPU_NAME="${1:-$($PY -c 'import torch; print(torch.cuda.get_device_name(0))')}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"

cat > "$OUT/wl.yaml" <<'YAML'
models:
  - name: llama-3.1-8b
    rate_rps: 12
    slo: {ttft_ms: 1000, tpot_ms: 60}
    buckets:
      - {input_tokens: 256, output_tokens: 128, share: 0.5}
      - {input_tokens: 1024, output_tokens: 256, share: 0.3}
      - {input_tokens: 4096, output_tokens: 512, share: 0.2}
YAML

echo "== runtime: batch-1 decode, Llama-3.1-8B shape, bf16"
timeout 180 $PY bench/runtime.py --device cuda --model llama-3.1-8b --tokens 128 | tee "$OUT/runtime.json"

echo "== gpumix profile, TP 1"
rm -f "$OUT/profiles.json"
time timeout 360 $PY -m cli.app profile run "$OUT/wl.yaml" --device cuda --tp 1 --gpu-name "$GPU_NAME" \
  --out "$OUT/profiles.json" --calibrate "$OUT/efficiency.json" \
  --prefill-lens 128,256,512,1024,2048,4096 --batches 1,4,16,32,64,128,256 \
  --contexts 256,1024,2304,4352 --iters 5 --rounds 2 2>&1 | tee "$OUT/profile.log"

$PY - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
d = json.load(open(f"{out}/profiles.json"))
for p in d["profiles"]:
    print(p["model"], "TP", p["tp"], "held-out error", json.dumps(p["fit"]["heldout_error"]))
for g, c in d.get("calibration", {}).items():
    print(g, "roofline median step-time error: default %.1f%% -> calibrated %.1f%%" %
          (100 * c["median_error_before"], 100 * c["median_error_after"]), "factors", c["factors"])
for e in d["entries"]:
    print(e)
PY
