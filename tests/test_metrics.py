"""Metrics agree with scikit-learn; pooled ones stream through fixed-size histograms."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score, roc_auc_score

from cflnet_sdk.errors import DataError
from cflnet_sdk.training.metrics import MetricAccumulator, binary_auc


def random_images(count: int = 12, seed: int = 0):
    """Probability maps correlated with blob masks, plus a pristine and an all-tampered image."""
    rng = np.random.default_rng(seed)
    for n in range(count):
        height, width = rng.integers(20, 48, size=2)
        mask = np.zeros((height, width), dtype=bool)
        if n % 4:  # every fourth image is pristine
            top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
            mask[top:top + height // 3, left:left + width // 3] = True
        probability = np.clip(0.35 * mask + rng.random((height, width)) * 0.8, 0, 1)
        if n == 5:
            probability = 1.0 - probability  # an inverted map: the paper's variant forgives it
        yield probability.astype(np.float32), mask, float(probability.mean() + 0.2 * mask.any())
    yield rng.random((16, 16)).astype(np.float32), np.ones((16, 16), dtype=bool), 0.9


@pytest.fixture(scope="module")
def data():
    return list(random_images())


@pytest.fixture(scope="module")
def metrics(data):
    accumulator = MetricAccumulator()
    for probability, mask, score in data:
        accumulator.update(probability, mask, score)
    return accumulator.compute()


def test_per_image_auc_and_the_papers_flip_invariant_variant(data, metrics):
    aucs = [roc_auc_score(m.ravel(), p.ravel()) for p, m, _ in data if 0 < m.mean() < 1]
    assert metrics["pixel_auc"] == pytest.approx(np.mean(aucs), abs=1e-6)
    flipped = np.mean([max(a, 1 - a) for a in aucs])
    assert metrics["pixel_auc_flip_invariant_paper"] == pytest.approx(flipped, abs=1e-6)
    assert metrics["pixel_auc_flip_invariant_paper"] > metrics["pixel_auc"]
    assert metrics["pixel_auc_images"] == len(aucs)
    assert metrics["pixel_auc_skipped_single_class"] == len(data) - len(aucs) == 4


@pytest.mark.parametrize("levels", [3, 50, 100_000])
def test_binary_auc_is_scikit_learns_with_ties(levels):
    """Quantised maps tie many pixels; ties count one half, as in ``roc_auc_score``."""
    rng = np.random.default_rng(levels)
    for _ in range(5):
        mask = rng.random((60, 90)) < rng.uniform(0.01, 0.9)
        probability = np.round((0.3 * mask + rng.random(mask.shape)) * levels) / levels
        assert binary_auc(mask, probability.astype(np.float32)) == pytest.approx(
            roc_auc_score(mask.ravel(), probability.astype(np.float32).ravel()), abs=1e-12)
    assert binary_auc(np.array([True, False]), np.array([0.5, 0.5])) == 0.5


def pooled(data):
    probability = np.concatenate([p.ravel() for p, _, _ in data])
    mask = np.concatenate([m.ravel() for _, m, _ in data])
    return probability, mask


def test_pooled_auc_streams_within_1e3(data, metrics):
    probability, mask = pooled(data)
    assert metrics["pooled_pixel_auc"] == pytest.approx(roc_auc_score(mask, probability),
                                                        abs=1e-3)
    assert metrics["pixels"] == mask.size and metrics["tampered_pixels"] == mask.sum()


def test_f1_and_iou_at_threshold_and_at_the_best_threshold(data, metrics):
    probability, mask = pooled(data)
    predicted = probability >= 0.5
    assert metrics["pixel_f1"] == pytest.approx(f1_score(mask, predicted), abs=1e-6)
    assert metrics["pixel_iou"] == pytest.approx(jaccard_score(mask, predicted), abs=1e-6)
    best = probability >= metrics["best_threshold"]
    assert metrics["pixel_f1_best"] == pytest.approx(f1_score(mask, best), abs=1e-6)
    assert metrics["pixel_iou_best"] == pytest.approx(jaccard_score(mask, best), abs=1e-6)
    for threshold in (0.3, 0.5, 0.7):  # no threshold beats the best one
        assert f1_score(mask, probability >= threshold) <= metrics["pixel_f1_best"] + 1e-9
    tampered = [(p, m) for p, m, _ in data if m.any()]
    assert metrics["pixel_f1_image_mean"] == pytest.approx(
        np.mean([f1_score(m.ravel(), p.ravel() >= 0.5) for p, m in tampered]), abs=1e-6)
    assert metrics["pixel_iou_image_mean"] == pytest.approx(
        np.mean([jaccard_score(m.ravel(), p.ravel() >= 0.5) for p, m in tampered]), abs=1e-6)


def test_image_level_auc_from_scores(data, metrics):
    labels = [m.any() for _, m, _ in data]
    scores = [s for _, _, s in data]
    assert metrics["image_auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert metrics["tampered_images"] == sum(labels) and metrics["images"] == len(data)


def test_results_are_plain_json_and_merge_equals_one_pass(data, metrics):
    assert json.loads(json.dumps(metrics)) == metrics
    assert all(v is None or type(v) in (int, float) for v in metrics.values())
    halves = MetricAccumulator(), MetricAccumulator()
    for n, (probability, mask, score) in enumerate(data):
        halves[n % 2].update(probability, mask, score)
    merged = halves[0].merge(halves[1]).compute()
    for key, value in metrics.items():
        assert merged[key] == pytest.approx(value, abs=1e-12), key


def test_degenerate_inputs_never_crash():
    empty = MetricAccumulator().compute()
    assert empty["images"] == 0 and empty["pixel_auc"] is None and empty["image_auc"] is None
    only_pristine = MetricAccumulator()
    only_pristine.update(np.full((8, 8), 0.2), np.zeros((8, 8), bool))  # no score given
    result = only_pristine.compute()
    assert result["pixel_auc"] is None and result["pixel_auc_skipped_single_class"] == 1
    assert result["pooled_pixel_auc"] is None and result["pixel_f1_best"] is None
    assert result["images_without_score"] == 1 and result["pixel_f1"] is None
    with pytest.raises(DataError, match="same size"):
        only_pristine.update(np.zeros((8, 8)), np.zeros((4, 4), bool))
    with pytest.raises(DataError, match="NaN"):
        only_pristine.update(np.full((4, 4), np.nan), np.zeros((4, 4), bool))


def test_metrics_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, cflnet_sdk.training.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_false_alarms_detections_and_the_mask_shown_on_unedited_images():
    """At the decision: unedited images called tampered, forged ones caught, and the share of
    an unedited image's pixels in the mask the model shows (not the raw map's)."""
    accumulator = MetricAccumulator(threshold=0.5, decision=0.6)
    blank = np.zeros((10, 10), bool)
    forged = blank.copy()
    forged[:5] = True
    map_ = np.full((10, 10), 0.7, np.float32)
    for score in (0.2, 0.65, 0.4, 0.59):  # one of four unedited images called tampered
        shown = map_ >= 0.5 if score >= 0.6 else blank
        accumulator.update(map_, blank, score, predicted=shown)
    for score in (0.9, 0.3):
        accumulator.update(map_, forged, score)
    result = accumulator.compute()
    assert result["unedited_images"] == 4 and result["false_alarm_rate"] == 0.25
    assert result["unedited_mask_fraction"] == 0.25  # one image fully shown, three empty
    assert result["detection_rate"] == 0.5 and result["decision_threshold"] == 0.6
    none = MetricAccumulator(decision=None)
    none.update(map_, blank, 0.9)
    assert none.compute()["false_alarm_rate"] is None  # no operating point: no verdict


def test_detection_of_forged_among_unedited_images_matches_scikit_learn():
    from cflnet_sdk.training.metrics import detection

    rng = np.random.default_rng(3)
    forged, unedited = rng.normal(1.0, 1.0, 50), rng.normal(0.0, 1.0, 80)
    found = detection(forged, unedited, decision=1.0)
    labels = np.r_[np.ones(50), np.zeros(80)]
    assert found["detection_auc"] == pytest.approx(roc_auc_score(labels, np.r_[forged, unedited]))
    cut = np.quantile(unedited, 0.95)
    assert found["detected_at_fa"] == pytest.approx((forged > cut).mean())
    assert (unedited > cut).mean() <= 0.05
    assert found["detection_rate"] == pytest.approx((forged >= 1.0).mean())
    assert found["false_alarm_rate"] == pytest.approx((unedited >= 1.0).mean())
    assert detection(forged, [])["detection_auc"] is None
