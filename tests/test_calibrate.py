"""The image-level operating point: chosen on unedited photos, written into the model file,
and obeyed by the Localizer that loads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk.errors import DataError, ModelFileError
from cflnet_sdk.training.calibrate import operating_point, with_decision


@pytest.mark.parametrize("rate, flagged", [(0.0, 0), (0.05, 0), (0.1, 1), (0.25, 1), (0.3, 3)])
def test_operating_point_calls_at_most_the_allowed_share_tampered(rate, flagged):
    scores = [0.9, 0.8, 0.8, 0.7, 0.61, 0.6, 0.5, 0.4, 0.3, 0.2]  # a tie is never split
    threshold = operating_point(scores, rate)
    called = sum(s >= threshold for s in scores)
    assert called <= rate * len(scores) and called == flagged
    assert threshold == pytest.approx(round(threshold, 4))  # stored to four decimals
    higher = operating_point(scores, 0.0)
    assert higher > max(scores) and operating_point([1.0], 0.0) == 1.0


def test_every_group_is_held_to_the_rate():
    from cflnet_sdk.training.calibrate import worst_group_point

    groups = {"camera JPEGs": [0.1 * i for i in range(10)],
              "never compressed": [0.5 + 0.05 * i for i in range(10)], "empty": []}
    threshold, hardest = worst_group_point(groups, 0.1)
    assert hardest == "never compressed" and threshold > 0.9
    assert all(sum(s >= threshold for s in scores) <= 1 for scores in groups.values())


def test_operating_point_refuses_what_it_cannot_choose():
    with pytest.raises(DataError, match="no unedited photo"):
        operating_point([], 0.05)
    with pytest.raises(DataError, match="must be in"):
        operating_point([0.5], 1.0)


def test_a_checkpoint_gets_the_decision_and_keeps_its_weights(tiny_checkpoint, tmp_path):
    from safetensors.numpy import load_file

    from cflnet_sdk import Localizer
    from cflnet_sdk.training.checkpoint import read_checkpoint_info

    out = tmp_path / "decided.safetensors"
    contract = with_decision(tiny_checkpoint, 0.7312, 0.05, out)
    assert (contract.decision_threshold, contract.false_alarm_rate) == (0.7312, 0.05)
    before, after = load_file(tiny_checkpoint), load_file(out)
    assert before.keys() == after.keys()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    _, read = read_checkpoint_info(out)
    assert read == contract and read.size == (64, 64)
    localizer = Localizer(out, device="cpu")
    assert localizer.decision_threshold == 0.7312
    rgb = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    prediction = localizer.predict(rgb)
    assert prediction.tampered == (prediction.score >= 0.7312)
    with pytest.raises(ModelFileError, match="not a safetensors"):
        (tmp_path / "bad.safetensors").write_bytes(b"\x01")
        with_decision(tmp_path / "bad.safetensors", 0.5, 0.05, tmp_path / "x.safetensors")
    with pytest.raises(ModelFileError, match="engine"):
        with_decision(tmp_path / "model.engine", 0.5, 0.05, tmp_path / "x.engine")


def test_cli_calibrate_an_onnx_model_on_unedited_photos(tile_onnx, tmp_path):
    """``cflnet calibrate``: every backend then decides at the threshold that calls at most the
    allowed share of the unedited photos (as they are and re-saved) tampered."""
    from cflnet_sdk import Localizer

    folder = tmp_path / "unedited"
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(10):
        name = f"u{i}.png"
        Image.fromarray(rng.integers(0, 255, (90, 130, 3), dtype=np.uint8)).save(folder / name)
        rows.append({"image": name, "mask": None, "kind": "authentic"})
    (folder / "broken.png").write_bytes(b"not a png")
    rows.append({"image": "broken.png", "mask": None})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "decided.onnx"
    command = [sys.executable, "-m", "cflnet_sdk", "calibrate", str(tile_onnx), "--unedited",
               str(folder), "--false-alarms", "0.1", "--resave-jpeg", "80", "--no-copy-move",
               "-o", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "broken.png" in done.stderr  # reported, the rest calibrated
    localizer = Localizer(out)
    assert localizer.contract.false_alarm_rate == 0.1
    assert localizer.contract.copy_move_threshold is None and not localizer.copy_move
    scores = [p.score for p in localizer.predict_batch(sorted(folder.glob("u*.png")))]
    assert sum(s >= localizer.decision_threshold for s in scores) <= 1  # 1 of 10 allowed
    assert "of 10 unedited photo(s)" in done.stdout and "set by" in done.stdout


def test_cli_calibrate_raises_the_copy_move_point_for_its_false_alarms(tile_onnx, tmp_path):
    """--copy-move-false-alarms 0: a photo with a cloned patch among the "unedited" ones sets
    the copy-move operating point above its score; without the option the module's."""
    from cflnet_sdk import Localizer
    from cflnet_sdk.runtime.copymove import SCORE_THRESHOLD
    from tests.conftest import photo_array
    from tests.test_fusion import cloned_photo

    folder = tmp_path / "unedited"
    folder.mkdir()
    rgb, _ = cloned_photo()
    Image.fromarray(rgb).save(folder / "cloned.png")
    Image.fromarray(photo_array("coffee")[:200, :300]).save(folder / "coffee.png")
    rows = [{"image": name, "mask": None} for name in ("cloned.png", "coffee.png")]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    copied = Localizer(tile_onnx, copy_move=True).predict(rgb).copy_move.score
    assert copied >= SCORE_THRESHOLD
    for option, expected in ((["--copy-move-false-alarms", "0"], copied), ([], None)):
        out = tmp_path / f"decided{len(option)}.onnx"
        command = [sys.executable, "-m", "cflnet_sdk", "calibrate", str(tile_onnx),
                   "--unedited", str(folder), "--false-alarms", "0.5", *option, "-o", str(out)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, done.stderr[-3000:]
        point = Localizer(out).contract.copy_move_threshold
        assert point > expected if expected is not None else point == SCORE_THRESHOLD
        assert "copy-move operating point" in done.stdout
    refused = subprocess.run([*command[:-2], "--copy-move-false-alarms", "0.6", "-o",
                              str(tmp_path / "x.onnx")], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and "at most --false-alarms" in refused.stderr
