"""The four local manipulations: splicing, copy-move, removal and local enhancement.

Each takes an HxWx3 uint8 image and a random generator and returns the edited image, the mask
of manipulated pixels and the parameters drawn. The mask is ``alpha >= 0.5 or pixel changed``:
every pixel inside the pasted/edited shape counts even where the edit happens to leave its value
unchanged, and a feathered edge counts exactly where it altered the value, so no changed pixel
is ever outside the mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from cflnet_sdk.training.data.ops import to_uint8
from cflnet_sdk.training.data.shapes import feather, random_shape

KINDS = ("splice", "copy-move", "removal", "enhance")


@dataclass
class Manipulated:
    """An edited image, its manipulation mask and the parameters that produced it."""

    image: np.ndarray
    mask: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Region:
    """Where an edit lands: a box and the soft alpha of the shape inside it."""

    top: int
    left: int
    alpha: np.ndarray  # float32 box-sized, in [0, 1]
    sigma: float

    @property
    def height(self) -> int:
        return self.alpha.shape[0]

    @property
    def width(self) -> int:
        return self.alpha.shape[1]

    def box(self, image: np.ndarray) -> np.ndarray:
        return image[self.top:self.top + self.height, self.left:self.left + self.width]

    def describe(self) -> dict[str, Any]:
        return {"box": [self.top, self.left, self.height, self.width],
                "feather": round(self.sigma, 3)}


AREA = (0.005, 0.35)  # share of the image one edit covers: from a detail to a third
SHAPE_FILL = 0.4  # share of its box that a random_shape blob covers, roughly


def _box_size(rng: np.random.Generator, height: int, width: int,
              area: tuple[float, float]) -> tuple[int, int]:
    """A box whose blob covers a log-uniform share of the image within ``area``."""
    share = float(np.exp(rng.uniform(np.log(area[0]), np.log(area[1]))))
    aspect = rng.uniform(0.5, 2.0)
    side = (share * height * width / SHAPE_FILL) ** 0.5
    return (max(8, min(height, round(side * aspect ** 0.5))),
            max(8, min(width, round(side / aspect ** 0.5))))


def _random_alpha(rng: np.random.Generator, box_h: int, box_w: int,
                  soft_rate: float = 0.5) -> tuple[np.ndarray, float]:
    shape = random_shape(rng, box_h, box_w)
    sigma = float(rng.uniform(0.8, 3.0)) if rng.random() < soft_rate else 0.0
    return feather(shape, sigma), sigma


def _place(rng: np.random.Generator, alpha: np.ndarray, height: int, width: int,
           ) -> tuple[int, int, tuple[slice, slice]]:
    """Where ``alpha``'s box lands, its centre anywhere in the image, the border maybe cutting it.

    Returns the top-left corner of the part inside the image and that part's slices of the box.
    After ten empty draws the box is centred: a blob always covers its box centre.
    """
    box_h, box_w = alpha.shape
    corners = [(int(rng.integers(0, height)) - box_h // 2, int(rng.integers(0, width)) - box_w // 2)
               for _ in range(10)]
    for top, left in [*corners, ((height - box_h) // 2, (width - box_w) // 2)]:
        inside = (slice(max(0, -top), min(box_h, height - top)),
                  slice(max(0, -left), min(box_w, width - left)))
        if (alpha[inside] >= 0.5).any():
            break
    return max(0, top), max(0, left), inside


def _random_region(rng: np.random.Generator, image: np.ndarray, area: tuple[float, float],
                   soft_rate: float = 0.5) -> Region:
    height, width = image.shape[:2]
    box_h, box_w = _box_size(rng, height, width, area)
    alpha, sigma = _random_alpha(rng, box_h, box_w, soft_rate)
    top, left, inside = _place(rng, alpha, height, width)
    return Region(top, left, alpha[inside], sigma)


def _composite(image: np.ndarray, region: Region, content: np.ndarray) -> tuple[np.ndarray,
                                                                                  np.ndarray]:
    """Blend box-sized ``content`` into ``image`` through the region's alpha; return image, mask."""
    out = image.copy()
    base = region.box(image).astype(np.float32)
    alpha = region.alpha[..., None]
    blended = to_uint8(base * (1.0 - alpha) + content.astype(np.float32) * alpha)
    region.box(out)[...] = blended
    mask = np.zeros(image.shape[:2], dtype=bool)
    changed = (blended != region.box(image)).any(axis=2)
    region.box(mask)[...] = (region.alpha >= 0.5) | changed
    return out, mask


def _match_colour(patch: np.ndarray, reference: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Shift/scale each channel of ``patch`` to the weighted mean and std of ``reference``."""
    w = weight[..., None] / max(float(weight.sum()), 1e-6)
    out = patch.astype(np.float32)
    ref = reference.astype(np.float32)
    mean_p, mean_r = (out * w).sum((0, 1)), (ref * w).sum((0, 1))
    std_p = np.sqrt(((out - mean_p) ** 2 * w).sum((0, 1))) + 1e-3
    std_r = np.sqrt(((ref - mean_r) ** 2 * w).sum((0, 1)))
    gain = np.clip(std_r / std_p, 0.5, 2.0)
    return (out - mean_p) * gain + mean_r


def splice(image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None,
           area: tuple[float, float] = AREA) -> Manipulated:
    """Paste an object-shaped region of another photo (``donor``, same size as ``image``)."""
    if donor is None or donor.shape != image.shape:
        raise ValueError("splice needs a donor photo of the same size as the image")
    region = _random_region(rng, image, area)
    top = int(rng.integers(0, image.shape[0] - region.height + 1))
    left = int(rng.integers(0, image.shape[1] - region.width + 1))
    patch = donor[top:top + region.height, left:left + region.width]
    colour_match = bool(rng.random() < 0.5)
    content = _match_colour(patch, region.box(image), region.alpha) if colour_match else patch
    out, mask = _composite(image, region, content)
    return Manipulated(out, mask, {**region.describe(), "donor_box": [top, left],
                                   "colour_match": colour_match})


def _transform(patch: np.ndarray, alpha: np.ndarray, scale: float, angle: float,
               ) -> tuple[np.ndarray, np.ndarray]:
    """Scale then rotate a patch and its alpha together (bilinear, canvas grows to fit)."""
    height, width = alpha.shape
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    rgb = Image.fromarray(patch).resize(size, Image.BILINEAR)
    soft = Image.fromarray(alpha.astype(np.float32)).resize(size, Image.BILINEAR)
    if angle:
        rgb = rgb.rotate(angle, Image.BILINEAR, expand=True)
        soft = soft.rotate(angle, Image.BILINEAR, expand=True)
    return np.asarray(rgb), np.clip(np.asarray(soft, dtype=np.float32), 0.0, 1.0)


def copy_move(image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None,
              area: tuple[float, float] = AREA) -> Manipulated:
    """Copy an object-shaped region of the image elsewhere in it, optionally scaled/rotated."""
    height, width = image.shape[:2]
    source = _random_region(rng, image, area)
    scale = float(rng.uniform(0.7, 1.3)) if rng.random() < 0.5 else 1.0
    angle = float(rng.uniform(-30.0, 30.0)) if rng.random() < 0.5 else 0.0
    patch, alpha = _transform(source.box(image), source.alpha, scale, angle)
    for _ in range(20):  # prefer a target that does not sit on its own source
        top, left, inside = _place(rng, alpha, height, width)
        if abs(top - source.top) + abs(left - source.left) > min(alpha.shape) // 2:
            break
    target = Region(top, left, alpha[inside], source.sigma)
    out, mask = _composite(image, target, patch[inside])
    return Manipulated(out, mask, {**target.describe(), "source_box": [source.top, source.left],
                                   "scale": round(scale, 3), "angle": round(angle, 2)})


def _diffusion_fill(crop: np.ndarray, hole: np.ndarray, rng: np.random.Generator,
                    smooth: float) -> np.ndarray:
    """Fill ``hole`` from its surroundings: nearest known pixel, smoothed, plus matched grain."""
    nearest = ndimage.distance_transform_edt(hole, return_distances=False, return_indices=True)
    filled = crop[nearest[0], nearest[1]].astype(np.float32)
    filled = ndimage.gaussian_filter(filled, sigma=(smooth, smooth, 0))
    pixels = crop.astype(np.float32)
    residual = pixels - ndimage.gaussian_filter(pixels, sigma=(1.5, 1.5, 0))
    known = ~hole
    grain = float(residual[known].std()) if known.any() else 0.0
    return filled + rng.normal(0.0, 0.8 * grain, size=filled.shape).astype(np.float32)


def removal(image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None,
            area: tuple[float, float] = AREA) -> Manipulated:
    """Erase an object-shaped region and inpaint it by diffusion from the surrounding pixels."""
    region = _random_region(rng, image, area)
    height, width = image.shape[:2]
    margin = max(region.height, region.width) // 3
    top, left = max(0, region.top - margin), max(0, region.left - margin)
    bottom = min(height, region.top + region.height + margin)
    right = min(width, region.left + region.width + margin)
    crop = image[top:bottom, left:right]
    hole = np.zeros(crop.shape[:2], dtype=bool)
    y, x = region.top - top, region.left - left
    hole[y:y + region.height, x:x + region.width] = region.alpha > 0.0
    smooth = max(1.5, min(region.height, region.width) / 10.0)
    filled = _diffusion_fill(crop, hole, rng, smooth)
    content = filled[y:y + region.height, x:x + region.width]
    out, mask = _composite(image, region, content)
    return Manipulated(out, mask, {**region.describe(), "fill": "diffusion",
                                   "smooth": round(smooth, 2)})


def _enhance_content(box: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray,
                                                                          dict[str, Any]]:
    pixels = box.astype(np.float32)
    operation = str(rng.choice(["blur", "sharpen", "brightness-contrast", "noise"]))
    if operation == "blur":
        sigma = float(rng.uniform(1.2, 3.0))
        return ndimage.gaussian_filter(pixels, (sigma, sigma, 0)), {"op": operation,
                                                                    "sigma": round(sigma, 3)}
    if operation == "sharpen":
        amount = float(rng.uniform(0.8, 2.0))
        detail = pixels - ndimage.gaussian_filter(pixels, (1.5, 1.5, 0))
        return pixels + amount * detail, {"op": operation, "amount": round(amount, 3)}
    if operation == "brightness-contrast":
        gain = float(rng.choice([-1.0, 1.0]) * rng.uniform(0.1, 0.3) + 1.0)
        bias = float(rng.choice([-1.0, 1.0]) * rng.uniform(10.0, 30.0))
        mean = pixels.mean()
        return (pixels - mean) * gain + mean + bias, {"op": operation, "gain": round(gain, 3),
                                                      "bias": round(bias, 2)}
    sigma = float(rng.uniform(6.0, 16.0))
    noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape).astype(np.float32)
    return noisy, {"op": operation, "sigma": round(sigma, 3)}


def enhance(image: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None,
            area: tuple[float, float] = AREA) -> Manipulated:
    """Blur, sharpen, re-light or add noise inside an object-shaped region only."""
    region = _random_region(rng, image, area, soft_rate=0.7)
    content, params = _enhance_content(region.box(image), rng)
    out, mask = _composite(image, region, content)
    return Manipulated(out, mask, {**region.describe(), **params})


MANIPULATIONS: dict[str, Callable[..., Manipulated]] = {
    "splice": splice, "copy-move": copy_move, "removal": removal, "enhance": enhance,
}
