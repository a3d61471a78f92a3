#!/usr/bin/env bash
# Turn a finished training run into the shipped default model and measure it for the model card.
# Usage: scripts/build_default_model.sh RUN_DIR [HELD_OUT_SIZE]
# Writes cflnet_sdk/models/cflnet_default.{onnx,safetensors} (float16-stored weights) and
# docs/model-card-metrics.json; prints the sha256 and speed figures the card quotes.
set -euo pipefail
cd "$(dirname "$0")/.."
run="${1:?usage: scripts/build_default_model.sh RUN_DIR [HELD_OUT_SIZE]}"
size="${2:-128}"
models=cflnet_sdk/models
held_out="${TMPDIR:-/tmp}/cflnet-held-out-$size"

cflnet-export onnx "$run/best.safetensors" -o "$models/cflnet_default.onnx" --weights-fp16
python - "$run/best.safetensors" "$models/cflnet_default.safetensors" <<'PY'
import sys
from cflnet_sdk.training.checkpoint import load_checkpoint, save_checkpoint
save_checkpoint(load_checkpoint(sys.argv[1]), sys.argv[2], half=True)
PY
# A held-out set the run never saw: a new seed, every manipulation kind, 320 images.
rm -rf "$held_out"
cflnet synth --out "$held_out" --count 320 --seed 20261125 --size "$size" --workers 2
cflnet evaluate --model "$models/cflnet_default.onnx" --data "$held_out" \
  --json docs/model-card-metrics.json
cflnet benchmark --model "$models/cflnet_default.onnx" --model "$models/cflnet_default.safetensors" \
  --batch-sizes 1,8 --size "$size" --warmup 3 --iterations 20
sha256sum "$models"/cflnet_default.*
python tests/default_model_reference.py   # pin the shipped model's answer for the tests
