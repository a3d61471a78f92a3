"""The preprocessing contract: one definition, exact constants, faithful resize rules."""

from __future__ import annotations

import numpy as np
import pytest

from cflnet_sdk.contract import IMAGENET_MEAN, IMAGENET_STD, Contract
from cflnet_sdk.errors import ConfigError
from tests.conftest import photo_array


def test_json_round_trip():
    contract = Contract(height=320, width=448, threshold=0.3)
    assert Contract.from_json(contract.to_json()) == contract
    assert Contract.from_json(Contract.authors(224).to_json()) == Contract.authors(224)


@pytest.mark.parametrize("text", ["{", "[]", '{"height": "x"}', '{"colour": 1}'])
def test_unreadable_json_is_a_config_error(text):
    with pytest.raises(ConfigError):
        Contract.from_json(text)


@pytest.mark.parametrize("kwargs", [dict(height=100), dict(channel_order="RGBA"),
                                    dict(std=(0, 1, 1)), dict(threshold=1.5),
                                    dict(resize="bicubic"), dict(version=99)])
def test_invalid_values_are_refused(kwargs):
    with pytest.raises(ConfigError):
        Contract(**kwargs)


def test_normalize_matches_formula_in_rgb_and_bgr():
    rgb = photo_array("astronaut")[:256, :256]
    expected = (rgb.astype(np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    got = Contract().normalize(rgb)
    assert got.dtype == np.float32 and got.shape == (3, 256, 256)
    np.testing.assert_allclose(got, expected.transpose(2, 0, 1), atol=1e-6)
    bgr_expected = (rgb[..., ::-1].astype(np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(Contract.authors(256).normalize(rgb),
                               bgr_expected.transpose(2, 0, 1), atol=1e-6)


def test_cv2_rule_matches_opencv_within_one_level():
    cv2 = pytest.importorskip("cv2")
    rgb = photo_array("chelsea")  # 300x451: odd factors in both directions
    for size in [(224, 224), (256, 512), (640, 480)]:
        ours = Contract(height=size[0], width=size[1], resize="bilinear-cv2").resize_image(rgb)
        theirs = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_resize_mask_is_nearest_and_boolean():
    mask = np.zeros((300, 451), dtype=bool)
    mask[100:200, 150:300] = True
    resized = Contract().resize_mask(mask)
    assert resized.dtype == bool and resized.shape == (256, 256)
    assert 0.05 < resized.mean() < 0.2


def test_restore_probability_returns_original_size_in_unit_range():
    probability = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    restored = Contract().restore_probability(probability, 77, 1000)
    assert restored.shape == (77, 1000) and restored.dtype == np.float32
    assert restored.min() >= 0 and restored.max() <= 1


def test_training_and_runtime_share_one_preprocess():
    rgb = photo_array("coffee")
    contract = Contract()
    once = contract.preprocess(rgb)
    assert np.array_equal(once, contract.normalize(contract.resize_image(rgb)))
