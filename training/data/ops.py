"""Pixel operations shared by synthetic post-processing and training augmentation.

One implementation of JPEG, blur, noise and resize, so a trace that the generator hides and a
trace that augmentation adds are produced the same way. numpy, Pillow and scipy only: these run
in DataLoader worker processes where importing torch would be a waste.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Round and clip float pixels back to uint8."""
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode to JPEG in memory and decode again: the blocking and quantisation a re-save adds."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Blur each channel (not across channels) with a Gaussian of ``sigma`` pixels."""
    blurred = ndimage.gaussian_filter(rgb.astype(np.float32), sigma=(sigma, sigma, 0))
    return to_uint8(blurred)


def add_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``sigma`` grey levels."""
    noise = rng.normal(0.0, sigma, size=rgb.shape).astype(np.float32)
    return to_uint8(rgb.astype(np.float32) + noise)


def resize_rgb(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of an RGB image (antialiased by Pillow when shrinking)."""
    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR))


def resize_bool(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask: labels never blend into fractions."""
    if mask.shape == (height, width):
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((width, height), Image.NEAREST)) > 127


def resample_roundtrip(rgb: np.ndarray, scale: float) -> np.ndarray:
    """Shrink by ``scale`` and enlarge back: the interpolation trace of a resized upload."""
    height, width = rgb.shape[:2]
    small = resize_rgb(rgb, max(8, round(height * scale)), max(8, round(width * scale)))
    return resize_rgb(small, height, width)
