#!/usr/bin/env bash
# Turn a training run into the shipped default model and measure it for the model card.
# Usage: scripts/build_default_model.sh CHECKPOINT
# Writes cflnet_sdk/models/cflnet_default.{onnx,safetensors} (float16-stored weights) with the
# image-level operating point chosen by `cflnet calibrate` on unedited photos, and
# docs/model-card-metrics.json (held-out synthetic set, real forgeries, unedited photos as they
# are and re-saved at JPEG q75, training-free baselines); prints the sha256 and speed figures
# the card quotes. FALSE_ALARMS: the share of unedited calibration photos the verdict may call
# tampered, in each set as it is and re-saved (default 0.05).
# PHOTOS: the photo folder training drew from (its held-out tenth makes the synthetic test set);
# REAL_VAL: real forgeries for validation (never training).
set -euo pipefail
cd "$(dirname "$0")/.."
checkpoint="${1:?usage: scripts/build_default_model.sh CHECKPOINT}"
photos="${PHOTOS:-../shared/photos}"
real_val="${REAL_VAL:-../shared/data/real-val}"
models=cflnet_sdk/models
held_out="${TMPDIR:-/tmp}/cflnet-held-out-native"
held_out_v1="${TMPDIR:-/tmp}/cflnet-held-out-native-v1"

unedited="${TMPDIR:-/tmp}/cflnet-unedited"
split="${TMPDIR:-/tmp}/cflnet-real-val-split"
# MISD's and the unedited photos' first SELECTION_PAIRS rows chose the checkpoint and the
# operating point; the rest are reported apart, untouched by either choice (manifests of
# absolute paths, so the split needs no copy of the images).
pairs="${SELECTION_PAIRS:-120}"
unedited_pairs="${SELECTION_UNEDITED:-133}"
python - "$real_val" "$split" "$pairs" "$unedited_pairs" <<'PY'
import json, sys
from pathlib import Path
real_val, split = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
for name, count in (("misd", int(sys.argv[3])), ("authentic", int(sys.argv[4]))):
    folder = real_val / name
    rows = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()
            if line]
    for row in rows:
        row.update(image=str(folder / row["image"]),
                   mask=row["mask"] and str(folder / row["mask"]))
    for part, chosen in (("selection", rows[:count]), ("rest", rows[count:])):
        (split / f"{name}-{part}").mkdir(parents=True, exist_ok=True)
        (split / f"{name}-{part}" / "manifest.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in chosen))
PY
python scripts/unedited_validation.py --photos "$photos" -o "$unedited"
# The operating point, chosen on the exported file that ships (its scores, not torch's).
# Tiles overlap by TILE_OVERLAP pixels (default 32: a fifth fewer tiles than the contract's
# default 64, which pays for the copy-move analysis; docs/benchmarks.md).
cflnet-export onnx "$checkpoint" -o "$models/cflnet_default.onnx" --weights-fp16 \
  --tile-overlap "${TILE_OVERLAP:-32}"
cflnet calibrate "$models/cflnet_default.onnx" --unedited "$unedited" \
  --unedited "$split/authentic-selection" --resave-jpeg 75 --false-alarms "${FALSE_ALARMS:-0.05}" \
  -o "$models/cflnet_default.onnx"
python - "$checkpoint" "$models/cflnet_default.onnx" "$models/cflnet_default.safetensors" <<'PY'
import sys
from cflnet_sdk.export.onnx import read_metadata
from cflnet_sdk.contract import Contract
from cflnet_sdk.metadata import CONTRACT_KEY
from cflnet_sdk.training.checkpoint import load_checkpoint, save_checkpoint
# the shipped file's whole contract (tiles, verdict), so both files decide alike
decided = Contract.from_json(read_metadata(sys.argv[2])[CONTRACT_KEY])
save_checkpoint(load_checkpoint(sys.argv[1]), sys.argv[3], contract=decided, half=True)
PY
# Synthetic forgeries of photos training never saw (the held-out tenth), edits anywhere.
rm -rf "$held_out" "$held_out_v1"
cflnet synth --out "$held_out" --count 320 --seed 20261125 --size 320 --native \
  --split held-out --sources "$photos" --workers 2
# The same set as the generator made it until a2ca25d (before "Compression histories"), so a
# recipe change never moves the figure silently: both are reported.
cflnet synth --out "$held_out_v1" --count 320 --config docs/held-out-synthetic-v1.json \
  --sources "$photos" --workers 2
COLUMNS=200 cflnet evaluate --model "$models/cflnet_default.onnx" --data "$held_out" \
  --data "$held_out_v1" --data "$real_val/misd" --data "$split/misd-selection" \
  --data "$split/misd-rest" --data "$real_val/noso" --data "$real_val/authentic" \
  --data "$split/authentic-rest" --data "$unedited" --resave-jpeg 75 \
  --json docs/model-card-metrics.json
cflnet benchmark --mode tile --model "$models/cflnet_default.onnx" \
  --model "$models/cflnet_default.safetensors" --megapixels 1,4 --warmup 1 --iterations 3
sha256sum "$models"/cflnet_default.*
python tests/default_model_reference.py   # pin the shipped model's answer for the tests
