"""Exact resume: an interrupted run continues with the very losses of an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cflnet_sdk.errors import ConfigError  # noqa: E402
from cflnet_sdk.training.state import decode, encode, load_state  # noqa: E402
from cflnet_sdk.training.train import train  # noqa: E402
from cflnet_sdk.training.train_config import TrainConfig, resume_config  # noqa: E402

from .test_train import TINY, one_thread, tiny_env  # noqa: E402, F401


def config(out, **changes) -> TrainConfig:
    values = {**TINY, "synthetic": True, "epochs": 2, "steps_per_epoch": 3, "val_samples": 2,
              "workers": 0, "save_every": 0, "device": "cpu", "progress": False,
              "out": str(out), **changes}
    return TrainConfig(**values)


def run(cfg: TrainConfig, resume: bool = False) -> tuple[dict[int, float], object]:
    losses: dict[int, float] = {}
    result = train(cfg, resume=resume, log=lambda _: None,
                   on_step=lambda step, values: losses.__setitem__(step, values["loss"].item()))
    return losses, result


def weights(path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("ema_decay, image_weight", [(0.0, 0.0), (0.9, 1.0)])
def test_resume_reproduces_the_uninterrupted_run(torch_threads, tmp_path, ema_decay,
                                                 image_weight):
    settings = {"ema_decay": ema_decay, "image_weight": image_weight}
    straight, result = run(config(tmp_path / "a", **settings))
    assert result.status == "finished" and sorted(straight) == [1, 2, 3, 4, 5, 6]

    pieces, first = run(config(tmp_path / "b", max_steps=2, **settings))
    assert first.status == "max_steps" and load_state(tmp_path / "b")[1]["batch"] == 2
    if not image_weight:  # a run saved before the image loss existed has no sum for it
        state = tmp_path / "b/state.json"
        saved = json.loads(state.read_text())
        del saved["sums"]["image"]
        state.write_text(json.dumps(saved))
    for _ in range(2):  # then across the epoch end, then to the end
        more, result = run(resume_config(tmp_path / "b", {"max_steps": 2}), resume=True)
        pieces.update(more)
    assert result.status == "finished" and sorted(pieces) == sorted(straight)
    for step in straight:
        assert pieces[step] == pytest.approx(straight[step], abs=1e-6), step
    final_a, final_b = weights(tmp_path / "a/last.safetensors"), weights(
        tmp_path / "b/last.safetensors")
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    trained = load_state(tmp_path / "a")[0]  # the weights the optimizer moves
    averaged = not all(torch.equal(final_a[k], trained[k]) for k in final_a)
    assert averaged == bool(ema_decay)  # with EMA, the saved model is their moving average
    csv_rows = (tmp_path / "b/metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in csv_rows[1:]] == ["1", "2"]  # one row per epoch


def test_state_round_trip_without_pickle():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    value = {"optimizer": optimizer.state_dict(), "numpy": np.random.get_state(),
             "python": (3, (1, 2), None), "nested": [1.5, {"x": None}]}
    tensors: dict[str, torch.Tensor] = {}
    document = json.loads(json.dumps(encode(value, "s", tensors)))
    back = decode(document, tensors)
    assert back["python"] == value["python"] and back["nested"] == value["nested"]
    assert np.array_equal(back["numpy"][1], value["numpy"][1])
    assert back["numpy"][1].dtype == np.uint32
    fresh = torch.optim.Adam(model.parameters(), lr=1e-3)
    fresh.load_state_dict(back["optimizer"])  # ids and tensors restored as torch expects
    assert torch.equal(fresh.state_dict()["state"][0]["exp_avg"],
                       optimizer.state_dict()["state"][0]["exp_avg"])


def test_resume_refuses_changes_that_alter_the_math(tmp_path):
    (tmp_path / "config.yaml").write_text(config(tmp_path).to_yaml())
    with pytest.raises(ConfigError, match="cannot change lr"):
        resume_config(tmp_path, {"lr": 0.5})
    assert resume_config(tmp_path, {"epochs": 9}).epochs == 9


def test_a_new_run_never_overwrites_a_run(torch_threads, tmp_path):
    (tmp_path / "state.safetensors").write_bytes(b"x")
    with pytest.raises(ConfigError, match="--resume"):
        train(config(tmp_path), log=lambda _: None)


def test_ctrl_c_saves_and_the_run_resumes(torch_threads, tmp_path):
    """SIGINT to a real ``cflnet train``: state saved at a step boundary, exit 130, resumable."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "cflnet_sdk", "train", "--synthetic", "--backbone",
               "resnet18", "--aspp-channels", "32", "--embedding-dim", "16", "--size", "64",
               "--batch-size", "2", "--epochs", "1", "--steps-per-epoch", "200",
               "--val-samples", "2", "--workers", "1", "--device", "cpu", "--log-every", "1",
               "--no-progress", "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=tiny_env())
    seen = []
    deadline = time.monotonic() + 240
    for line in process.stdout:  # wait for real steps before interrupting
        seen.append(line)
        if "step 2 " in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert "interrupted" in stdout and "--resume" in stdout
    assert "Traceback" not in stderr
    _, payload = load_state(out)
    assert 2 <= payload["step"] < 200 and payload["batch"] == payload["step"]
    losses, result = run(resume_config(out, {"max_steps": 1, "workers": 0}), resume=True)
    assert result.status == "max_steps" and list(losses) == [payload["step"] + 1]
