"""Training augmentations, all off by default as in the authors' code.

Geometric steps (flip, resize) move the image and the mask together; photometric steps (JPEG,
blur, noise) touch the image only, since they do not move tampered pixels. numpy/Pillow only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cflnet_sdk.errors import ConfigError
from cflnet_sdk.training.data import ops


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and how strongly; each enabled step fires with ``probability``."""

    hflip: bool = False
    vflip: bool = False
    resize: bool = False
    jpeg: bool = False
    blur: bool = False
    noise: bool = False
    probability: float = 0.5
    scale_range: tuple[float, float] = (0.5, 1.5)
    jpeg_quality: tuple[int, int] = (60, 95)
    blur_sigma: tuple[float, float] = (0.3, 1.5)
    noise_sigma: tuple[float, float] = (1.0, 6.0)

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError(f"augment probability {self.probability} must be in [0, 1]")
        if not 0.0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"scale_range {self.scale_range} must be 0 < low <= high")

    @classmethod
    def all(cls, probability: float = 0.5) -> AugmentConfig:
        """Every augmentation enabled."""
        return cls(True, True, True, True, True, True, probability)

    @property
    def enabled(self) -> bool:
        return any((self.hflip, self.vflip, self.resize, self.jpeg, self.blur, self.noise))


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
            config: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Apply the enabled augmentations; the mask stays aligned with the image pixel for pixel."""
    if not config.enabled:
        return image, mask

    def fire(enabled: bool) -> bool:
        return enabled and rng.random() < config.probability

    if fire(config.hflip):
        image, mask = image[:, ::-1], mask[:, ::-1]
    if fire(config.vflip):
        image, mask = image[::-1], mask[::-1]
    image, mask = np.ascontiguousarray(image), np.ascontiguousarray(mask)
    if fire(config.resize):
        scale = rng.uniform(*config.scale_range)
        height = max(8, round(image.shape[0] * scale))
        width = max(8, round(image.shape[1] * scale))
        image = ops.resize_rgb(image, height, width)
        mask = ops.resize_bool(mask, height, width)
    if fire(config.jpeg):
        image = ops.jpeg_roundtrip(image, int(rng.integers(config.jpeg_quality[0],
                                                           config.jpeg_quality[1] + 1)))
    if fire(config.blur):
        image = ops.gaussian_blur(image, float(rng.uniform(*config.blur_sigma)))
    if fire(config.noise):
        image = ops.add_noise(image, float(rng.uniform(*config.noise_sigma)), rng)
    return image, mask
