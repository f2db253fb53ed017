#!/usr/bin/env bash
# GPU check of the whole loop on one GPU: runtime speed, `gpumix profile`, `gpumix plan` on the
# measured profile, `gpumix validate` of that plan on the same GPU (planned load, then tripled).
#   bash scripts/gpu_check.sh [GPU_NAME]        # GPU_NAME: catalog name for the entries, e.g. H200
# 1. batch-1 decode of a Llama-3.1-8B-shaped model in bf16: tokens/s, achieved GB/s vs copy GB/s
# 2. `gpumix profile` of that model at TP 1 (bf16, full size): fitted latency model, held-out error,
#    entries for the workload's buckets, and the error of the analytic (roofline) estimate before
#    and after calibration
# 3. `gpumix plan` with those entries on this GPU type, `gpumix validate` of the plan at its planned
#    load (should hold) and at three times that load (should fail)
# Budget: at most 9 minutes (each step has its own timeout) on an H100/H200; results go to $OUT or ./gpu_check.
# Environment (for a dry run on CPU): DEVICE (cuda), SCALE ("" = full size; e.g. "--scale-layers 2
# --scale-hidden 0.05 --scale-vocab 512"), PREFILL, BATCHES, CONTEXTS, ITERS, ROUNDS (the sweep),
# DURATION (validate seconds), TOKENS (runtime bench), THREADS (CPU only), RATE, TTFT_MS, TPOT_MS.
cd "$(dirname "$0")/.."
OUT_DEFAULT=gpu_check CPU_GPU_NAME=testcpu
source scripts/gpu_common.sh "$@"

cat > "$OUT/wl.yaml" <<YAML
models:
  - name: llama-3.1-8b
    rate_rps: ${RATE:-12}
    slo: {ttft_ms: ${TTFT_MS:-1000}, tpot_ms: ${TPOT_MS:-60}}
    gpus: [$GPU_NAME]
    buckets:
      - {input_tokens: 256, output_tokens: 128, share: 0.5}
      - {input_tokens: 1024, output_tokens: 256, share: 0.3}
      - {input_tokens: 4096, output_tokens: 512, share: 0.2}
gpus: [{name: $GPU_NAME, price_per_hour: 1.0}]
tp_degrees: [1]
YAML

echo "== runtime: batch-1 decode, Llama-3.1-8B shape, bf16"
timeout 100 $PY bench/runtime.py --device "$DEVICE" --model llama-3.1-8b --tokens "${TOKENS:-128}" $SCALE $EXTRA \
  | tee "$OUT/runtime.json"

echo "== gpumix profile, TP 1"
rm -f "$OUT/profiles.json"
time timeout 240 $PY -m gpumix profile run "$OUT/wl.yaml" --device "$DEVICE" --tp 1 --gpu-name "$GPU_NAME" \
  --out "$OUT/profiles.json" --calibrate "$OUT/efficiency.json" $SCALE $EXTRA \
  --prefill-lens "${PREFILL:-128,256,512,1024,2048,4096}" --batches "${BATCHES:-1,4,16,32,64,128}" \
  --contexts "${CONTEXTS:-256,1024,2304}" --iters "${ITERS:-5}" --rounds "${ROUNDS:-2}" 2>&1 | tee "$OUT/profile.log"

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

echo "== gpumix plan on the measured entries, validate on this GPU"
$PY -m gpumix plan "$OUT/wl.yaml" --profiles "$OUT/profiles.json" --out "$OUT/plan.json" --no-baseline \
  | tee "$OUT/plan.txt"
validate_twice 90

echo "== engine decode step with a mixed running batch (the serving path), vs the profile's steps"
$PY - "$DEVICE" "$OUT" $SCALE <<'PY'
import json, sys, time
import torch
from gpumix.profiler.runtime.engine import Engine
from gpumix.profiler.runtime.model import DTYPES, ModelArgs, build
device, out, scale = sys.argv[1], sys.argv[2], sys.argv[3:]
prov = json.load(open(f"{out}/profiles.json"))["profiles"][0]["provenance"]
args = ModelArgs(**prov["run_args"])
dev = "cuda:0" if device == "cuda" else "cpu"
model = build(args, dev, DTYPES[prov["dtype"]], 0)
rows = []
for running in (8, 32, 64):
    eng = Engine(model, 128, 4608)
    for i in range(running):  # the workload's mix of prompt lengths
        eng.add([1] * (256, 1024, 4096)[i % 3 if i % 5 else 2], 400)
    while eng.scheduler.waiting:
        eng.step()
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    sync(); t0 = time.perf_counter()
    for _ in range(20):
        eng.step()
    sync(); ms = (time.perf_counter() - t0) / 20 * 1000
    rows.append({"running": running, "decode_step_ms": round(ms, 2)})
    print(rows[-1], flush=True)
    del eng
json.dump(rows, open(f"{out}/engine_steps.json", "w"))
PY
