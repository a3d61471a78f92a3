"""DistributedDataParallel on the CPU: a real ``torchrun`` with 2 gloo processes."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from .test_train import tiny_env  # noqa: E402


def test_torchrun_two_processes_train_and_write_one_checkpoint(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "cflnet_sdk", "train", "--synthetic",
               "--backbone", "resnet18", "--aspp-channels", "32", "--embedding-dim", "16",
               "--size", "64", "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "2",
               "--val-samples", "5", "--workers", "0", "--device", "cpu", "--no-progress",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, env=tiny_env(), timeout=400)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    assert done.stdout.count("batch 2 x 2 process(es)") == 1  # rank 0 alone logs
    assert done.stdout.count("epoch 1/1 ") == 1
    files = sorted(p.name for p in out.iterdir())
    assert files == ["best.safetensors", "config.yaml", "last.safetensors", "metrics.csv",
                     "state.json", "state.safetensors"]
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert len(rows) == 1 and rows[0]["step"] == "2"
    assert rows[0]["val_images"] == "5"  # 3 + 2 images on the two ranks, reduced on rank 0

    from cflnet_sdk.training.checkpoint import load_checkpoint
    from cflnet_sdk.training.state import load_state

    model = load_checkpoint(out / "last.safetensors")
    assert not any(k.startswith("module.") for k in model.state_dict())
    _, payload = load_state(out)
    assert payload["world_size"] == 2 and len(payload["rng"]) == 2  # every rank's RNG
    assert not torch.equal(payload["rng"][0]["torch"], payload["rng"][1]["torch"])
