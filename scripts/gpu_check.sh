#!/usr/bin/env bash
# The one command to run on a machine with an NVIDIA GPU (issue 12).
#   bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS]
# Installs the wheels it finds in $CFLNET_WHEELS (default .whl/) and this checkout (editable,
# no dependencies) into the machine's python3 (or $PYTHON), runs the GPU tests, exports the
# default model and the paper's ResNet-50 network, benchmarks every backend present (PyTorch
# CUDA fp32/fp16, ONNX Runtime CUDA, TensorRT) at batch 1 and 32, and writes DIR/gpu_check.{json,md,log} (DIR: --out, else $OUT, else
# out/gpu-check), naming every backend that was missing and why. About 8 minutes at most on an H100.
# Without a GPU (nvidia-smi absent or failing) or with --dry-run it runs end to end here, with
# the GPU parts skipped and their reasons in the report. docs/export.md says how wheels travel.
set -euo pipefail
cd "$(dirname "$0")/.."
command="bash scripts/gpu_check.sh $*"
out="${OUT:-out/gpu-check}"
dry=""
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry="dry run asked for (--dry-run)" ;;
    --out) out="$2"; shift ;;
    --budget) args+=(--budget "$2"); shift ;;
    *) echo "usage: bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS]" >&2
       exit 2 ;;
  esac
  shift
done
if [ -z "$dry" ] && ! { command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; }; then
  dry="no NVIDIA GPU here (nvidia-smi absent or failing)"
fi

if [ -n "$dry" ]; then  # the environment at hand: this checkout's venv if there is one
  python="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
  echo "dry run: $dry; using $python as it is"
else  # the machine's Python (with its torch), plus the wheels brought along and this checkout
  python="${PYTHON:-python3}"
  wheels=("${CFLNET_WHEELS:-.whl}"/*.whl)
  if [ -e "${wheels[0]}" ]; then
    echo "installing ${#wheels[@]} wheel(s) into $python: ${wheels[*]}"
    "$python" -m pip install -q --no-index --no-deps --no-compile "${wheels[@]}"
  else
    echo "no wheels in ${CFLNET_WHEELS:-.whl}/: using what $python has"
  fi
  # Editable, so that pytest (which puts this checkout first on sys.path) sees one package.
  if ! "$python" -c "import cflnet_sdk.export" 2>/dev/null; then
    echo "installing this checkout into $python (pip install -e . --no-deps)"
    "$python" -m pip install -q --no-index --no-deps --no-build-isolation -e .
  fi
fi
export PYTHONUNBUFFERED=1
exec "$python" scripts/gpu_check.py --out "$out" --command "$command" \
  ${dry:+--dry-run "$dry"} "${args[@]}"
