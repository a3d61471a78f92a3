"""Irregular, object-like region shapes for synthetic forgeries.

Real forgeries paste objects, not rectangles: a detector trained on boxes learns to find boxes.
A shape here is a star-convex blob whose radius varies smoothly with angle (a few low Fourier
harmonics), sometimes merged with a second blob, drawn as a filled polygon.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

VERTICES = 72


def _blob_polygon(rng: np.random.Generator, cy: float, cx: float, ry: float, rx: float,
                  ) -> list[tuple[float, float]]:
    angles = np.linspace(0.0, 2.0 * np.pi, VERTICES, endpoint=False)
    radius = np.ones(VERTICES)
    for harmonic in range(2, 7):
        amplitude = rng.uniform(0.0, 0.35 / harmonic)
        radius += amplitude * np.cos(harmonic * angles + rng.uniform(0.0, 2.0 * np.pi))
    radius = np.clip(radius, 0.35, None)
    tilt = rng.uniform(0.0, np.pi)
    dy, dx = ry * radius * np.sin(angles), rx * radius * np.cos(angles)
    ys = cy + dy * np.cos(tilt) + dx * np.sin(tilt)
    xs = cx + dx * np.cos(tilt) - dy * np.sin(tilt)
    return list(zip(xs.tolist(), ys.tolist(), strict=True))


def random_shape(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A boolean ``height x width`` mask holding one object-like blob that fills most of the box."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    parts = 1 if rng.random() < 0.6 else 2
    for part in range(parts):
        shrink = 1.0 if part == 0 else rng.uniform(0.45, 0.7)
        ry, rx = 0.36 * height * shrink, 0.36 * width * shrink
        cy = height / 2 + (0 if part == 0 else rng.uniform(-0.2, 0.2) * height)
        cx = width / 2 + (0 if part == 0 else rng.uniform(-0.2, 0.2) * width)
        draw.polygon(_blob_polygon(rng, cy, cx, ry, rx), fill=255)
    return np.asarray(canvas) > 127


def feather(shape: np.ndarray, sigma: float) -> np.ndarray:
    """Soft alpha in [0, 1] from a hard shape; ``sigma == 0`` keeps the hard edge."""
    alpha = shape.astype(np.float32)
    if sigma <= 0:
        return alpha
    return np.clip(ndimage.gaussian_filter(alpha, sigma), 0.0, 1.0)


def outline(mask: np.ndarray, width: int = 2) -> np.ndarray:
    """The pixels on the border of ``mask`` (for drawing contours on previews)."""
    grown = ndimage.binary_dilation(mask, iterations=width)
    return grown & ~ndimage.binary_erosion(mask, iterations=1)
