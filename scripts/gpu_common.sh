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
