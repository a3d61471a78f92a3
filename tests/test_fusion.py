"""The fused verdict: the network's map and the copy-move evidence, by one documented rule, the
same whatever the backend."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk.fusion import fuse, on_decision_scale
from cflnet_sdk.runtime.copymove import SCORE_THRESHOLD

from .conftest import photo_array


@pytest.mark.parametrize("threshold, decision", [(0.3, 0.9), (0.5, 0.5), (0.8, 0.2)])
def test_the_copy_move_operating_point_lands_on_the_decision(threshold, decision):
    scores = np.linspace(0.0, 1.0, 101)
    moved = [on_decision_scale(s, threshold, decision) for s in scores]
    assert moved[0] == 0.0 and moved[-1] == pytest.approx(1.0)
    assert on_decision_scale(threshold, threshold, decision) == pytest.approx(decision)
    assert all(b >= a for a, b in itertools.pairwise(moved))  # ranks kept
    for s, m in zip(scores, moved, strict=True):  # each evidence passes at its own point
        assert (m >= decision) == (s >= threshold) or abs(s - threshold) < 1e-9


def test_the_same_map_moves_maps_and_scores_alike():
    values = np.linspace(0.0, 1.0, 101, dtype=np.float32)
    moved = on_decision_scale(values, 0.5, 0.8)
    assert moved.dtype == np.float32
    np.testing.assert_allclose(moved, [on_decision_scale(float(v), 0.5, 0.8) for v in values],
                               atol=1e-6)


def test_a_verified_copy_ranks_above_the_network_and_nothing_is_lowered():
    rng = np.random.default_rng(0)
    network = rng.random((20, 30), dtype=np.float32) * 0.9
    copy_move = np.zeros((20, 30), np.float32)
    copy_move[5:10, 5:10] = 0.7  # a pair past the copy-move operating point (0.5)
    copy_move[12:15, 20:25] = 0.2  # a weak pair
    probability, score = fuse(network, 0.4, copy_move, 0.7, 0.5, 0.6, 0.5)
    assert probability.dtype == np.float32
    assert probability[5:10, 5:10].min() > network.max()  # the copy outranks the network
    assert (probability >= network).all()  # no evidence lowers another
    assert np.array_equal(probability[copy_move == 0], network[copy_move == 0])
    weak = on_decision_scale(np.float32(0.2), 0.5, float(network.max()))
    np.testing.assert_allclose(probability[12:15, 20:25],
                               np.maximum(network[12:15, 20:25], weak), atol=1e-6)
    assert score >= 0.4 and score >= 0.6  # the copy-move score passed its point: so does this
    assert fuse(network, 0.7, copy_move, 0.0, 0.5, 0.6, 0.5)[1] == 0.7
    quiet = np.zeros_like(network) + 0.1  # the mask threshold anchors a photo the network
    fused = fuse(quiet, 0.1, copy_move, 0.7, 0.5, 0.6, 0.5)[0]  # barely marks
    assert fused[5:10, 5:10].min() >= 0.5


def cloned_photo() -> tuple[np.ndarray, np.ndarray]:
    """A real photo with a 60x60 patch copied 150 pixels to the right, and the truth."""
    rgb = photo_array("astronaut")[100:400, 50:450].copy()
    rgb[180:240, 260:320] = rgb[40:100, 110:170]
    truth = np.zeros(rgb.shape[:2], bool)
    truth[180:240, 260:320] = truth[40:100, 110:170] = True
    return rgb, truth


def test_localizer_fuses_copy_move_evidence_when_asked(tile_onnx):
    from sklearn.metrics import roc_auc_score

    from cflnet_sdk import Localizer

    rgb, truth = cloned_photo()
    plain = Localizer(tile_onnx).predict(rgb)
    assert plain.copy_move is None and plain.evidence == {}
    fused = Localizer(tile_onnx, copy_move=True).predict(rgb)
    assert set(fused.evidence) == {"network", "copy-move"}
    assert np.array_equal(fused.evidence["network"], plain.probability)
    assert fused.network_score == pytest.approx(plain.score)
    assert fused.copy_move is not None and fused.copy_move.pairs
    found = fused.evidence["copy-move"]
    assert roc_auc_score(truth.ravel(), found.ravel()) > 0.9
    assert np.array_equal(fused.probability, fuse(
        plain.probability, plain.score, found, fused.copy_move.score, SCORE_THRESHOLD,
        plain.decision, plain.threshold)[0])
    assert fused.probability[found >= SCORE_THRESHOLD].min() >= plain.probability.max()
    assert fused.tampered and fused.mask[truth].mean() > 0.5
    summary = fused.to_dict()
    assert summary["copy_move_score"] > 0 and summary["copy_move_pairs"]
    json.dumps(summary)
    overlay = np.asarray(fused.overlay(links=True))
    assert (overlay == (255, 220, 0)).all(axis=2).any()  # the link between source and copy


def test_copy_move_runs_beside_the_network_and_batches_fuse_the_same(tile_onnx):
    from cflnet_sdk import Localizer
    from cflnet_sdk.runtime.copymove import CopyMoveDetector

    rgb, _ = cloned_photo()
    with Localizer(tile_onnx, copy_move=True) as localizer:
        prepared = localizer.prepare(rgb)
        assert prepared.copy_move is not None  # started at decode, before the network runs
        localizer.infer([prepared])
        alone = localizer.finish(prepared)
        batch = localizer.predict_batch([rgb, rgb[:, ::-1].copy(), rgb], batch_size=2)
    expected = CopyMoveDetector().analyse(rgb)
    assert alone.copy_move.score == expected.score
    assert np.array_equal(alone.evidence["copy-move"], expected.probability)
    for result in (batch[0], batch[2]):
        assert np.array_equal(result.probability, alone.probability)
    assert batch[1].copy_move is not None


def test_cli_predict_reports_copy_move_pairs(tile_checkpoint, tmp_path):
    """A model calibrated with copy-move evidence fuses it in `cflnet predict` by itself."""
    from cflnet_sdk.training.calibrate import with_decision

    model = tmp_path / "fused.safetensors"
    with_decision(tile_checkpoint, 0.99, 0.05, model, copy_move_threshold=0.3)
    rgb, _ = cloned_photo()
    Image.fromarray(rgb).save(tmp_path / "cloned.png")
    Image.fromarray(photo_array("coffee")).save(tmp_path / "coffee.png")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "cflnet_sdk", "predict", str(tmp_path / "cloned.png"),
               str(tmp_path / "coffee.png"), "--model", str(model), "--device", "cpu",
               "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line)
            for line in (out / "predictions.jsonl").read_text().splitlines()}
    cloned = rows["cloned.png"]
    assert cloned["tampered"] and cloned["copy_move_pairs"] and cloned["copy_move_score"] > 0.3
    assert "network_score" in cloned and "copy_move_score" in rows["coffee.png"]
