#!/usr/bin/env bash
# GPU check of co-location (issue 8) on one GPU: profile two small models, set each one's rate to
# a quarter of its measured capacity, `gpumix plan --share-gpus` (one GPU hosting both, time use
# ~0.5), `gpumix validate` the shared group at its planned load (should hold) and tripled (should fail).
#   bash scripts/gpu_check_shared.sh [GPU_NAME]
# Budget: about 3 minutes on an H100/H200; results go to $OUT or ./gpu_check_shared.
# Environment (for a dry run on CPU): DEVICE (cuda), SCALE ("" = full size), THREADS, DURATION.
cd "$(dirname "$0")/.."
OUT_DEFAULT=gpu_check_shared CPU_GPU_NAME=L4
source scripts/gpu_common.sh "$@"
MODELS="$PWD/data/models"

workload() {  # rates of the two models
  cat > "$OUT/wl.yaml" <<YAML
models:
  - name: llama-3.2-1b
    config: $MODELS/llama-3.2-1b.json
    rate_rps: $1
    slo: {ttft_ms: 1000, tpot_ms: 60}
    buckets:
      - {input_tokens: 512, output_tokens: 128, share: 0.7}
      - {input_tokens: 2048, output_tokens: 256, share: 0.3}
  - name: qwen2.5-1.5b
    config: $MODELS/qwen2.5-1.5b.json
    rate_rps: $2
    slo: {ttft_ms: 1000, tpot_ms: 60}
    buckets:
      - {input_tokens: 1024, output_tokens: 128, share: 1.0}
gpus: [{name: $GPU_NAME, price_per_hour: 1.0}]
tp_degrees: [1]
max_utilization: 0.8
YAML
}

echo "== gpumix profile of both models, TP 1"
workload 1 1
time timeout 150 $PY -m gpumix profile run "$OUT/wl.yaml" --device "$DEVICE" --tp 1 --gpu-name "$GPU_NAME" \
  --out "$OUT/profiles.json" $SCALE $EXTRA --prefill-lens 128,512,1024,2048 --batches 1,8,32,64 \
  --contexts 256,1024,2304 --iters 3 --rounds 1 -q 2>&1 | tee "$OUT/profile.log"

RATES=$($PY - "$OUT" <<'PY'
import json, sys
entries = json.load(open(f"{sys.argv[1]}/profiles.json"))["entries"]
share = {"llama-3.2-1b": {(512, 128): 0.7, (2048, 256): 0.3}, "qwen2.5-1.5b": {(1024, 128): 1.0}}
cap = {m: 1 / sum(s / next(e["max_rps"] for e in entries if e["model"] == m
                           and (e["input_tokens"], e["output_tokens"]) == k) for k, s in mix.items())
       for m, mix in share.items()}
print(" ".join(str(round(0.25 * cap[m], 2)) for m in share))  # time use 0.25 + 0.25 of one GPU
PY
)
echo "rates (a quarter of each model's capacity): $RATES"
workload $RATES

echo "== gpumix plan --share-gpus, validate the shared group on this GPU"
$PY -m gpumix plan "$OUT/wl.yaml" --profiles "$OUT/profiles.json" --share-gpus --out "$OUT/plan.json" \
  | tee "$OUT/plan.txt"
validate_twice 80
