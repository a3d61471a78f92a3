"""The training-free baselines: what each map is, and how a model is compared with them.

torch-free: the baselines are numpy, Pillow and scipy only.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import uniform_filter
from sklearn.metrics import roc_auc_score

from cflnet_sdk.training.baselines import BASELINES, Comparison, centre_prior, ela

from .conftest import photo_array


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def spliced() -> tuple[np.ndarray, np.ndarray]:
    """A JPEG (q90) photo with a never-compressed patch of another photo pasted in, and its mask.

    Re-saving at q90 barely changes the JPEG background but does change the pasted pixels.
    """
    rgb = jpeg(photo_array("astronaut")[:240, :320], 90)
    donor = photo_array("chelsea")
    mask = np.zeros(rgb.shape[:2], bool)
    mask[40:120, 180:290] = True
    rgb = rgb.copy()
    rgb[mask] = donor[:80, :110].reshape(-1, 3)
    return rgb, mask


@pytest.mark.parametrize("shape", [(7, 7), (6, 10), (31, 17)])
def test_centre_prior_peaks_in_the_centre_and_is_symmetric(shape):
    prior = centre_prior(*shape)
    assert prior.shape == shape and prior.dtype == np.float32
    assert prior.min() >= 0.0 and prior.max() <= 1.0
    assert (prior == prior[::-1, :]).all() and (prior == prior[:, ::-1]).all()
    middle = prior[(shape[0] - 1) // 2:shape[0] // 2 + 1, (shape[1] - 1) // 2:shape[1] // 2 + 1]
    assert (middle == prior.max()).all()  # the pixel(s) at the centre hold the peak
    border = np.concatenate([prior[0], prior[-1], prior[:, 0], prior[:, -1]])
    assert border.max() < middle.min()
    row = prior[shape[0] // 2]  # never rises on the way out from the centre
    assert (np.diff(row[shape[1] // 2:]) <= 0).all() and (np.diff(row[:shape[1] // 2]) >= 0).all()


def test_ela_is_the_mean_channel_error_of_a_jpeg_resave_smoothed_9x9():
    rgb = photo_array("coffee")[:96, :128]
    expected = uniform_filter(np.abs(rgb.astype(np.float32) - jpeg(rgb, 90)).mean(axis=2), 9)
    result = ela(rgb)
    assert result.shape == rgb.shape[:2] and result.dtype == np.float32
    assert result.min() >= 0.0 and result.max() <= 1.0
    np.testing.assert_allclose(result * 255, expected, atol=1e-3)


def test_ela_lights_up_a_region_with_another_compression_history():
    rgb, mask = spliced()
    error = ela(rgb)
    assert error[mask].mean() > 3 * error[~mask].mean()
    assert roc_auc_score(mask.ravel(), error.ravel()) > 0.9
    centre = BASELINES["centre_prior"](rgb)  # knows nothing of the splice
    assert roc_auc_score(mask.ravel(), centre.ravel()) < 0.8


def test_comparison_means_and_strict_beats_on_a_constructed_case():
    comparison = Comparison()
    comparison.add(0.9, {"centre_prior": 0.6, "ela": 0.95})  # beats the prior only
    comparison.add(0.5, {"centre_prior": 0.6, "ela": 0.4})   # beats ELA only
    comparison.add(0.7, {"centre_prior": 0.7, "ela": 0.2})   # a tie is not a win
    comparison.add(None, {"centre_prior": 0.1, "ela": 0.1})  # no model AUC: left out
    comparison.add(0.8, None)                                # no baseline AUC: left out
    result = comparison.compute()
    assert result["baseline_images"] == 3
    assert result["centre_prior_pixel_auc"] == pytest.approx((0.6 + 0.6 + 0.7) / 3)
    assert result["ela_pixel_auc"] == pytest.approx((0.95 + 0.4 + 0.2) / 3)
    assert result["beats_centre_prior"] == pytest.approx(1 / 3)
    assert result["beats_ela"] == pytest.approx(2 / 3)
    assert Comparison().compute() == {"baseline_images": 0, "centre_prior_pixel_auc": None,
                                      "beats_centre_prior": None, "ela_pixel_auc": None,
                                      "beats_ela": None}


def test_evaluate_baselines_scores_like_a_model(tmp_path):
    """Own size, original mask, one-class masks skipped and counted, unreadable counted."""
    from cflnet_sdk.training.evaluate import evaluate_baselines, write_json

    rgb, mask = spliced()
    Image.fromarray(rgb).save(tmp_path / "splice.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "splice_mask.png")
    Image.fromarray(photo_array("chelsea")[:50, :70]).save(tmp_path / "pristine.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows = [{"image": "splice.png", "mask": "splice_mask.png", "kind": "splice"},
            {"image": "pristine.png", "kind": "pristine"}, {"image": "broken.png"}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    run = evaluate_baselines(tmp_path)
    assert [e.model for e in run.evaluations] == ["centre prior", "ELA"]
    assert list(run.aucs) == [str(tmp_path / "splice.png")]  # the only two-class mask
    for e, key in zip(run.evaluations, BASELINES, strict=True):
        expected = roc_auc_score(mask.ravel(), BASELINES[key](rgb).ravel())
        assert run.aucs[str(tmp_path / "splice.png")][key] == pytest.approx(expected)
        assert e.baseline and e.metrics["pixel_auc"] == pytest.approx(expected)
        assert e.metrics["images"] == 2 and e.metrics["skipped_unreadable"] == 1
        assert e.metrics["pixel_auc_skipped_single_class"] == 1
        assert set(e.metrics["by_kind"]) == {"pristine", "splice"}
        assert e.metrics["by_kind"]["splice"]["pixel_auc"] == pytest.approx(expected)
    write_json(run.evaluations, tmp_path / "out.json")
    document = json.loads((tmp_path / "out.json").read_text())
    assert document["matrix"]["models"] == ["centre prior", "ELA"]
    assert all(r["baseline"] for r in document["results"])
