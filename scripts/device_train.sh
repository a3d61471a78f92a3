#!/usr/bin/env bash
# Train default-model candidates on a lent GPU machine within a fixed wall-clock budget, then
# choose each run's epoch on real forgeries and leave the chosen weights in $OUT.
#
# The machine reaches nothing outside, so its data travel in .devdata (scripts/pack_device_data.py)
# and the package runs from the source tree through a link farm (no pip, no build backend).
# Two runs share the GPU and the CPUs: the shipped recipe (SRM + error levels) and the same
# without SRM. Each is stopped with SIGINT after TRAIN_SECONDS (it saves and exits cleanly).
# The chosen fp16 checkpoints are split into parts of 15 MiB (the device returns files of at most
# 16 MiB); join them with `cat NAME.part-* > NAME`.
#
#   TRAIN_SECONDS=360 bash scripts/device_train.sh             # on the device, OUT set
#   DEVICE=cpu WORKERS=1 TRAIN_SECONDS=60 EXTRA="--size 64 --steps-per-epoch 2" \
#       bash scripts/device_train.sh                           # a dry run anywhere
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-.devdata}
OUT=$(realpath -m "${OUT:-/tmp/device-out}")
RUNS=$(realpath -m "${RUNS:-/tmp/device-runs}")
TRAIN_SECONDS=${TRAIN_SECONDS:-360}
CHOOSE_SECONDS=${CHOOSE_SECONDS:-110}
WORKERS=${WORKERS:-7}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" "$RUNS"
exec > >(tee -a "$OUT/device.log") 2>&1

shim=$(mktemp -d)/site
mkdir -p "$shim/cflnet_sdk"
for entry in cflnet_sdk/*; do ln -s "$PWD/$entry" "$shim/cflnet_sdk/"; done
for stage in training export runtime; do ln -s "$PWD/$stage" "$shim/cflnet_sdk/$stage"; done
export PYTHONPATH="$shim${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
repo=$PWD
DATA=$(realpath "$DATA")
cd "$RUNS" || exit 1  # not the source tree: `python -m` would put its cflnet_sdk/ first
date -u; nvidia-smi -L 2>/dev/null; nproc
"$PYTHON" -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__,
      'cuda', torch.cuda.is_available())" || exit 1

# shellcheck disable=SC2206
recipe=(--synthetic --sources "$DATA/photos" --mode tile --ela 75,90,95 --backbone resnet10t
        --aspp-channels 64 --embedding-dim 64 --size 256 --batch-size 32 --lr 5e-4
        --patch-size 8 --steps-per-epoch 200 --epochs 200 --lr-step-epochs 6 --lr-gamma 0.5
        --val-samples 128 --workers "$WORKERS" --seed 1221 --save-every 0 --keep-epochs
        --no-progress --log-every 50 --device "$DEVICE" $EXTRA)

train() {  # name, flags...: bf16; fp32 if bf16 fails at once
  local name=$1 start=$SECONDS
  shift
  timeout -s INT "$TRAIN_SECONDS" "$PYTHON" -m cflnet_sdk train "${recipe[@]}" \
    --precision bf16 --out "$RUNS/$name" "$@" > "$OUT/train-$name.log" 2>&1
  local status=$?
  echo "$name: exit $status after $((SECONDS - start)) s"
  if [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ "$((SECONDS - start))" -lt 60 ]; then
    rm -rf "${RUNS:?}/$name"
    timeout -s INT "$((TRAIN_SECONDS - SECONDS + start))" "$PYTHON" -m cflnet_sdk train \
      "${recipe[@]}" --precision fp32 --out "$RUNS/$name" "$@" >> "$OUT/train-$name.log" 2>&1
    echo "$name (fp32): exit $?"
  fi
}
train srm &
first=$!
train nosrm --no-srm &
wait "$first" "$!"  # a plain `wait` would also wait for the log's tee
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv 2>/dev/null

"$PYTHON" "$repo/scripts/choose_epochs.py" "$RUNS/srm" "$RUNS/nosrm" --data "$DATA/select" \
  --device "$DEVICE" --jobs 8 --from-epoch "${FROM_EPOCH:-3}" --seconds "$CHOOSE_SECONDS" -o "$RUNS/chosen"
# at most 8 files come back: the log, one archive, two parts per chosen checkpoint
tar czf "$OUT/results.tgz" -C "$RUNS" chosen/choice.json srm/metrics.csv nosrm/metrics.csv \
  -C "$OUT" train-srm.log train-nosrm.log && rm -f "$OUT"/train-*.log
for best in "$RUNS"/chosen/*-best.safetensors; do
  split -b 15M "$best" "$OUT/$(basename "$best").part-"
done
ls -la "$OUT"; date -u; sleep 1
