# Sourced by the GPU check scripts: OUT, PY, DEVICE, SCALE, EXTRA and GPU_NAME from the environment
# and the first argument. Callers set OUT_DEFAULT and CPU_GPU_NAME (the catalog GPU a CPU dry run
# stands for) first.
set -uo pipefail  # no -e: a failed step still leaves the later ones and their output
OUT="${OUT:-$OUT_DEFAULT}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
SCALE="${SCALE:-}"
EXTRA="${THREADS:+--threads $THREADS}"
if [ "$DEVICE" = cuda ]; then
  GPU_NAME="${1:-$($PY -c 'import torch; print(torch.cuda.get_device_name(0))')}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.csv"
else
  GPU_NAME="${1:-$CPU_GPU_NAME}"
fi

validate_twice() {  # $1: seconds per validate run. The plan in $OUT/plan.json at its load, then tripled.
  timeout "$1" $PY -m gpumix validate "$OUT/plan.json" --device "$DEVICE" --gpu-name "$GPU_NAME" \
    --duration "${DURATION:-15}" --report "$OUT/validate.json" $EXTRA 2>&1 | tee "$OUT/validate.txt"
  echo "validate at the planned load: exit ${PIPESTATUS[0]} (0: the plan holds)"
  $PY - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
plan = json.load(open(f"{out}/plan.json"))
routes = [g["routes"] for g in plan["replicas"]] + [m["routes"] for g in plan.get("shared") or [] for m in g["models"]]
for rs in routes:
    for r in rs:
        r["rps"] *= 3
json.dump(plan, open(f"{out}/plan-x3.json", "w"), indent=2)
PY
  timeout "$1" $PY -m gpumix validate "$OUT/plan-x3.json" "$OUT/wl.yaml" --device "$DEVICE" \
    --gpu-name "$GPU_NAME" --duration "${DURATION:-15}" --report "$OUT/validate-x3.json" $EXTRA 2>&1 \
    | tee "$OUT/validate-x3.txt"
  echo "validate at 3x the planned load: exit ${PIPESTATUS[0]} (1: it fails, as it should)"
}
