"""Augmentations: off by default, geometric steps move image and mask together."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cflnet_sdk.errors import ConfigError
from cflnet_sdk.training.data.augment import AugmentConfig, augment


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    mask = np.zeros((48, 64), dtype=bool)
    mask[5:20, 40:60] = True
    image[mask] = 255  # the tampered region is recognisable in the pixels
    return image, mask


def test_off_by_default(pair):
    image, mask = pair
    out_image, out_mask = augment(image, mask, np.random.default_rng(1), AugmentConfig())
    assert out_image is image and out_mask is mask
    assert not AugmentConfig().enabled


@pytest.mark.parametrize("flip", ["hflip", "vflip"])
def test_flips_move_image_and_mask_together(pair, flip):
    image, mask = pair
    config = AugmentConfig(**{flip: True}, probability=1.0)
    out_image, out_mask = augment(image, mask, np.random.default_rng(1), config)
    axis = 1 if flip == "hflip" else 0
    assert np.array_equal(out_image, np.flip(image, axis))
    assert np.array_equal(out_mask, np.flip(mask, axis))
    assert (out_image[out_mask] == 255).all()


def test_resize_keeps_a_binary_aligned_mask(pair):
    image, mask = pair
    config = AugmentConfig(resize=True, probability=1.0, scale_range=(1.5, 1.5))
    out_image, out_mask = augment(image, mask, np.random.default_rng(1), config)
    assert out_image.shape == (72, 96, 3) and out_mask.shape == (72, 96)
    assert out_mask.dtype == bool
    assert out_mask.mean() == pytest.approx(mask.mean(), abs=0.01)
    inside = ndimage.binary_erosion(out_mask, iterations=2)  # away from blended edges
    assert inside.any() and out_image[inside].min() == 255


@pytest.mark.parametrize("step", ["jpeg", "blur", "noise"])
def test_photometric_steps_change_the_image_not_the_mask(pair, step):
    image, mask = pair
    config = AugmentConfig(**{step: True}, probability=1.0)
    out_image, out_mask = augment(image, mask, np.random.default_rng(1), config)
    assert out_image.shape == image.shape and out_image.dtype == np.uint8
    assert not np.array_equal(out_image, image)
    assert np.array_equal(out_mask, mask)


def test_seeded_and_validated(pair):
    image, mask = pair
    config = AugmentConfig.all(probability=0.7)
    first = augment(image, mask, np.random.default_rng(5), config)
    second = augment(image, mask, np.random.default_rng(5), config)
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    with pytest.raises(ConfigError):
        AugmentConfig(probability=2.0)
