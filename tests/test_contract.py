"""The preprocessing contract: one definition, exact constants, faithful resize rules."""

from __future__ import annotations

import numpy as np
import pytest

from cflnet_sdk.contract import (
    CONTRACT_VERSION,
    ELA_SCALE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PARALLEL_ELA_PIXELS,
    Contract,
    error_level,
)
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
    authors = Contract.authors(256)
    np.testing.assert_allclose(authors.normalize(authors.input_pixels(rgb)),
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


def test_version_1_contracts_still_load_as_resize_mode():
    old = ('{"channel_order": "RGB", "height": 128, "width": 128, '
           '"mean": [0.485, 0.456, 0.406], "resize": "bilinear", '
           '"std": [0.229, 0.224, 0.225], "threshold": 0.5, "version": 1}')
    contract = Contract.from_json(old)
    assert contract == Contract(height=128, width=128) and contract.mode == "resize"
    assert contract.channels == 3 and contract.version == CONTRACT_VERSION == 3
    assert contract.decision == contract.threshold  # no decision of its own: the threshold
    with pytest.raises(ConfigError, match="upgrade cflnet-sdk"):
        Contract.from_json(old.replace('"version": 1', '"version": 4'))


def test_the_decision_travels_and_is_checked():
    contract = Contract(decision_threshold=0.83, false_alarm_rate=0.05)
    assert Contract.from_json(contract.to_json()) == contract and contract.decision == 0.83
    for field in ("decision_threshold", "false_alarm_rate"):
        with pytest.raises(ConfigError, match=f"{field} 1.5 is outside"):
            Contract(**{field: 1.5})
    fused = Contract(decision_threshold=0.83, copy_move_threshold=0.55)
    assert fused.fuses_copy_move and not contract.fuses_copy_move
    assert not fused.uncalibrated().fuses_copy_move


def test_tile_and_error_level_fields_round_trip_and_are_checked():
    contract = Contract(mode="tile", tile_overlap=32, max_pixels=4_000_000,
                        ela_qualities=(90, 75))
    assert Contract.from_json(contract.to_json()) == contract and contract.channels == 5
    assert Contract(height=64, width=64).tile_overlap == 16  # default: a quarter of the side
    for bad in (dict(mode="crop"), dict(tile_overlap=12), dict(mode="tile", tile_overlap=256),
                dict(max_pixels=1000), dict(ela_qualities=(0,))):
        with pytest.raises(ConfigError):
            Contract(**bad)


def test_error_levels_are_extra_channels_scaled_and_resized_with_the_colour():
    rgb = photo_array("coffee")
    contract = Contract(ela_qualities=(90,))
    pixels = contract.input_pixels(rgb)
    assert pixels.shape == (*rgb.shape[:2], 4) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., :3], rgb)
    np.testing.assert_array_equal(pixels[..., 3], error_level(rgb, 90))
    tensor = contract.preprocess(rgb)
    assert tensor.shape == (4, 256, 256)
    np.testing.assert_array_equal(tensor[:3], Contract().preprocess(rgb))
    level = contract.resize_image(pixels)[..., 3]
    np.testing.assert_allclose(tensor[3], level / ELA_SCALE, atol=1e-6)


def test_error_levels_of_a_large_photo_are_the_same_in_threads():
    """From PARALLEL_ELA_PIXELS on the re-saves run in threads, each channel in its place."""
    rgb = np.tile(photo_array("coffee"), (3, 3, 1))  # 1200x1800: over the threshold
    assert rgb.shape[0] * rgb.shape[1] >= PARALLEL_ELA_PIXELS
    pixels = Contract(ela_qualities=(75, 90, 95)).input_pixels(rgb)
    for channel, quality in enumerate((75, 90, 95), start=3):
        np.testing.assert_array_equal(pixels[..., channel], error_level(rgb, quality))


@pytest.mark.parametrize("quality", [30, 90, 100])
def test_error_level_is_the_clipped_sum_of_absolute_differences_with_a_jpeg_resave(quality):
    import io

    from PIL import Image

    noise = np.random.default_rng(quality).integers(0, 256, (67, 45, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=quality)
    resaved = np.asarray(Image.open(buffer).convert("RGB")).astype(int)
    expected = np.minimum(np.abs(noise.astype(int) - resaved).sum(axis=2), 255)
    level = error_level(noise, quality)
    assert level.dtype == np.uint8 and level.max() == 255  # noise: some sums are clipped
    np.testing.assert_array_equal(level, expected)


def test_error_level_lights_up_a_region_with_another_compression_history():
    from cflnet_sdk.training.data.ops import jpeg_roundtrip

    photo = jpeg_roundtrip(photo_array("astronaut")[:256, :256], 90)
    pasted = photo.copy()
    pasted[64:192, 61:189] = photo_array("chelsea")[:128, :128]  # never JPEG'd, off the grid
    level = error_level(pasted, 90).astype(float)  # saved losslessly, as a PNG
    assert level[80:176, 80:176].mean() > 2 * level[:48].mean()
