#!/usr/bin/env bash
# Train default-model candidates on a lent GPU machine within a fixed wall-clock budget, then
# choose each run's epoch on real forgeries (and, when $DATA/unedited was packed, on how well it
# tells them from unedited photos) and leave the chosen weights in $OUT.
#
# The machine reaches nothing outside, so its data travel in .devdata (scripts/pack_device_data.py)
# and the package runs from the source tree through a link farm (no pip, no build backend).
# VARIANTS name the runs that share the GPU and the CPUs: nosrm (the shipped recipe: error levels,
# no SRM residuals) and srm (the same with SRM). Each is stopped with SIGINT after TRAIN_SECONDS
# (it saves and exits cleanly). INIT: a checkpoint to start from (`--init`, weights only), so a
# later lent machine continues where the last one stopped; with one variant its last epoch comes
# back too (<run>-last), the INIT of the next session. The fp16 checkpoints are split into parts
# of 15 MiB (the device returns at most 8 files of at most 16 MiB); join with
# `cat NAME.part-* > NAME`. AVERAGE_FROM=N: no choice on the machine; each run's kept epochs
# from N on come back averaged (<run>-mean, the fifth default model's rule: a learning-rate
# stage averaged smooths the swings of single epochs), to be scored here; the selection set then
# need not travel (pack with --select-count 0) and its room goes to the photos.
#
#   TRAIN_SECONDS=360 bash scripts/device_train.sh             # on the device, OUT set
#   INIT=cflnet_sdk/models/cflnet_default.safetensors SEED=1222 TRAIN_SECONDS=360 \
#       bash scripts/device_train.sh                           # continue the shipped model
#   INIT=cflnet_sdk/models/cflnet_default.safetensors AVERAGE_FROM=11 TRAIN_SECONDS=300 \
#       EXTRA="--lr 2.5e-4 --lr-step-epochs 10 --steps-per-epoch 100" bash scripts/device_train.sh
#   DEVICE=cpu WORKERS=1 TRAIN_SECONDS=60 EXTRA="--size 64 --steps-per-epoch 2" \
#       bash scripts/device_train.sh                           # a dry run anywhere
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-.devdata}
OUT=$(realpath -m "${OUT:-/tmp/device-out}")
RUNS=$(realpath -m "${RUNS:-/tmp/device-runs}")
TRAIN_SECONDS=${TRAIN_SECONDS:-360}
CHOOSE_SECONDS=${CHOOSE_SECONDS:-110}
VARIANTS=${VARIANTS:-nosrm}
read -ra variants <<< "$VARIANTS"
runs=() metrics=() logs=()
for variant in "${variants[@]}"; do  # all checked before any run starts
  case $variant in
    nosrm | srm) ;;
    *) echo "unknown variant $variant: choose nosrm, srm"; exit 2 ;;
  esac
  runs+=("$RUNS/$variant") metrics+=("$variant/metrics.csv") logs+=("train-$variant.log")
done
WORKERS=${WORKERS:-$((14 / ${#variants[@]}))}
INIT=${INIT:+$(realpath "$INIT")}
SEED=${SEED:-1221}  # a new one when continuing: fresh samples
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
EXTRA=${EXTRA:-}
AVERAGE_FROM=${AVERAGE_FROM:-}
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
        --ema-decay 0.999 --val-samples 128 --workers "$WORKERS" --seed "$SEED" --save-every 0
        --keep-epochs --no-progress --log-every 50 --device "$DEVICE" ${INIT:+--init "$INIT"} $EXTRA)

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
pids=()
for variant in "${variants[@]}"; do
  if [ "$variant" = nosrm ]; then train nosrm --no-srm & else train "$variant" & fi
  pids+=("$!")
done
wait "${pids[@]}"  # a plain `wait` would also wait for the log's tee
nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv 2>/dev/null

average() {  # run: its epochs from AVERAGE_FROM on, averaged; and its latest, both float16
  local run=$1 path epochs=()
  for path in "$run"/epoch-*.safetensors; do
    path=$(basename "$path" .safetensors)
    [ "$((10#${path#epoch-}))" -ge "$AVERAGE_FROM" ] && epochs+=("$run/$path.safetensors")
  done
  [ "${#epochs[@]}" -eq 0 ] && epochs=("$run/$path.safetensors")  # too few epochs: the latest
  echo "$(basename "$run")-mean: ${epochs[*]##*/}"
  "$PYTHON" -m cflnet_sdk average "${epochs[@]}" --half \
    -o "$RUNS/chosen/$(basename "$run")-mean.safetensors"
  "$PYTHON" -m cflnet_sdk average "$run/$path.safetensors" --half \
    -o "$RUNS/chosen/$(basename "$run")-last.safetensors"
}
mkdir -p "$RUNS/chosen"
if [ -n "$AVERAGE_FROM" ]; then
  for run in "${runs[@]}"; do average "$run"; done
else
  last=() unedited=()
  [ "${#variants[@]}" -eq 1 ] && last=(--keep-last)
  [ -d "$DATA/unedited" ] && unedited=(--unedited "$DATA/unedited")  # detection decides
  "$PYTHON" "$repo/scripts/choose_epochs.py" "${runs[@]}" --data "$DATA/select" "${unedited[@]}" \
    --device "$DEVICE" --jobs 8 --from-epoch "${FROM_EPOCH:-3}" --seconds "$CHOOSE_SECONDS" \
    "${last[@]}" -o "$RUNS/chosen"
fi
# at most 8 files come back: the log, one archive, two parts per checkpoint (four at most)
tar czf "$OUT/results.tgz" -C "$RUNS" $(cd "$RUNS" && ls chosen/*.json 2>/dev/null) "${metrics[@]}" \
  -C "$OUT" "${logs[@]}" && rm -f "${logs[@]/#/$OUT/}"
for chosen in "$RUNS"/chosen/*.safetensors; do
  split -b 15M "$chosen" "$OUT/$(basename "$chosen").part-"
done
ls -la "$OUT"; date -u; sleep 1
