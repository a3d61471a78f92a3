"""Training-free localisation maps that every accuracy figure must stand beside.

A model that does not beat these has learned nothing a few lines of numpy could not do:

- the **centre prior** scores where forgeries usually are (the middle of the photo) and says
  nothing about the pixels; a model that only learned its training generator's placement ties it;
- **ELA** (error level analysis) scores where the compression history differs, the oldest cue in
  photo forensics and a strong one on real splices.

Each map is HxW float in [0, 1] at the image's own size, so it is scored exactly like a model's
probability. ``Comparison`` pairs a model's per-image AUC with each baseline's on the same images.
numpy, Pillow and scipy only (no torch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from scipy.ndimage import uniform_filter

from cflnet_sdk.contract import error_level

ELA_QUALITY = 90
ELA_WINDOW = 9


def centre_prior(height: int, width: int) -> np.ndarray:
    """``1 - max(|y|, |x|)`` on pixel centres mapped to [-1, 1]: 1 in the middle, 0 at the border.

    A fixed map that ignores the pixels. Forgeries (and generators that must fit edits inside the
    frame) cluster in the middle of photos, so this alone scores well above chance; square
    contours (the Chebyshev distance) follow the frame of any aspect ratio.
    """
    y = np.abs(2 * np.arange(height) + 1 - height) / height  # exact in integers: symmetric
    x = np.abs(2 * np.arange(width) + 1 - width) / width
    return (1.0 - np.maximum(y[:, None], x[None, :])).astype(np.float32)


def ela(rgb: np.ndarray, quality: int = ELA_QUALITY, window: int = ELA_WINDOW) -> np.ndarray:
    """Error level analysis: |image - its JPEG re-save at ``quality``|, averaged over R, G, B and
    smoothed with a ``window`` x ``window`` mean, scaled to [0, 1].

    Content pasted from another JPEG (or resampled, inpainted) changes by another amount when
    saved again, so the map lights up where the compression history differs; the mean filter turns
    per-pixel noise into regions. Blind to edits without a compression mismatch.
    """
    mean_error = error_level(rgb, quality).astype(np.float32) / (3 * 255)
    return uniform_filter(mean_error, size=window)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "centre_prior": lambda rgb: centre_prior(*rgb.shape[:2]),
    "ela": ela,
}
"""Baseline key (JSON field prefix) -> map of an HxWx3 uint8 RGB image."""
LABELS = {"centre_prior": "centre prior", "ela": "ELA"}
"""Baseline key -> the name shown in tables and used as the model name of its rows."""


class Comparison:
    """A model's per-image AUC against each baseline's on the same images.

    ``add`` one image at a time (images without a pixel AUC on either side are left out);
    ``compute`` gives ``<key>_pixel_auc`` (the baseline's mean over those images) and
    ``beats_<key>`` (share of them where the model's AUC is strictly higher), plus
    ``baseline_images``, the number of images compared.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[float, Mapping[str, float]]] = []

    def add(self, model_auc: float | None, baseline_aucs: Mapping[str, float] | None) -> None:
        if model_auc is not None and baseline_aucs is not None:
            self.pairs.append((model_auc, baseline_aucs))

    def compute(self) -> dict[str, float | int | None]:
        result: dict[str, float | int | None] = {"baseline_images": len(self.pairs)}
        for key in BASELINES:
            model = np.array([m for m, _ in self.pairs], dtype=np.float64)
            baseline = np.array([b[key] for _, b in self.pairs], dtype=np.float64)
            result[f"{key}_pixel_auc"] = float(baseline.mean()) if self.pairs else None
            result[f"beats_{key}"] = float((model > baseline).mean()) if self.pairs else None
        return result
