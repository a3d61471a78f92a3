#!/usr/bin/env bash
# The one command to run on a machine with an NVIDIA GPU (issues 12 and 26).
#   bash scripts/gpu_check.sh [--dry-run] [--out DIR] [--budget SECONDS]
# Proves, in order of value and within a budget (default 180 s of work), what the machine can:
# the environment, the PyTorch CUDA backend (default model and the paper's ResNet-50: parity
# with the CPU, fp32/TF32/fp16/bf16 at batch 1/8/32, tile mode on 12 MP), AMP training steps, a
# DDP process group of one, `pytest -m gpu`, then, only where TensorRT or onnxruntime-gpu import,
# ONNX exports, engines and their benchmarks. Writes DIR/gpu_check.{json,md,log} (DIR: --out,
# else $OUT, else out/gpu-check) after every step, so a crash or a time-out keeps what finished.
# Wheels found in $CFLNET_WHEELS (default .whl/) go to a folder of their own on PYTHONPATH (pip
# install --target): the machine's Python is never written to, and this checkout runs as it
# is (scripts/checkout.py). Without a GPU (nvidia-smi absent or failing) or with --dry-run it
# all runs on the CPU with small stand-ins. docs/export.md says what it proves.
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
else  # the machine's Python, with its torch
  python="${PYTHON:-python3}"
fi
wheels=("${CFLNET_WHEELS:-.whl}"/*.whl)
if [ -e "${wheels[0]}" ]; then
  site="${TMPDIR:-/tmp}/cflnet-gpu-check-site"
  echo "installing ${#wheels[@]} wheel(s) into $site (on PYTHONPATH): ${wheels[*]}"
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${wheels[@]}"
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no wheels in ${CFLNET_WHEELS:-.whl}/: using what $python has"
fi
echo "python: $python${dry:+; dry run: $dry}"
export PYTHONUNBUFFERED=1
exec "$python" scripts/gpu_check.py --out "$out" --command "$command" \
  ${dry:+--dry-run "$dry"} ${args[@]+"${args[@]}"}
