"""The result of one localisation: a probability map, its mask, an image score and an overlay."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from cflnet_sdk.runtime.copymove import CopyMoveEvidence

TOP_FRACTION = 0.01  # the image score averages the top 1% of pixel probabilities


def image_score(probability: np.ndarray, top_fraction: float = TOP_FRACTION) -> float:
    """Mean of the highest ``top_fraction`` of probabilities (at least one pixel).

    A max would be set off by one noisy pixel and a plain mean drowned by a small forgery;
    the top 1% is stable against both: a forged region of 1% of the image scores like its
    interior.
    """
    flat = np.asarray(probability, dtype=np.float32).ravel()
    count = max(1, round(flat.size * top_fraction))
    top = np.partition(flat, flat.size - count)[flat.size - count:]
    return float(top.mean(dtype=np.float64))


@dataclass(eq=False)
class Prediction:
    """Where an image was likely tampered with.

    ``probability``: float32 HxW in [0, 1] at the original image size (after EXIF rotation),
    the tampered-class probability per pixel, whatever the verdict.
    ``score``: the image-level tamper score, the mean of the top 1% of pixel probabilities
    (so a few noisy pixels cannot set it off and a small forgery still counts). It is a score,
    not a calibrated probability: its meaning is the operating point ``decision_threshold``
    (the model contract's, chosen for a stated share of false alarms on unedited photos,
    ``Localizer.contract.false_alarm_rate``). ``tampered``: ``score >= decision_threshold``,
    the image-level verdict. ``mask``: the pixels of that verdict, ``probability >=
    threshold`` on an image called tampered and empty on one that is not, so the mask never
    shows regions in a photo the verdict calls untouched.
    ``image``: the decoded HxWx3 uint8 RGB input, kept for :meth:`overlay`.
    Where the verdict fuses several evidences (:mod:`cflnet_sdk.fusion`), ``probability`` and
    ``score`` are the fused ones; ``evidence`` holds each map on its own (``"network"``,
    ``"copy-move"``), ``network_score`` the network's score and ``copy_move`` what self-matching
    found (its score and the matched region pairs with their transforms).
    """

    probability: np.ndarray
    score: float
    threshold: float
    image: np.ndarray | None = field(default=None, repr=False)
    source: str | None = None
    decision_threshold: float | None = None  # None: ``threshold`` (models before the decision)
    evidence: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    network_score: float | None = None
    copy_move: CopyMoveEvidence | None = field(default=None, repr=False)

    @cached_property
    def mask(self) -> np.ndarray:
        if not self.tampered:
            return np.zeros(self.probability.shape, dtype=bool)
        return self.probability >= self.threshold

    @property
    def decision(self) -> float:
        """The image-level operating point ``score`` is held to."""
        return self.threshold if self.decision_threshold is None else self.decision_threshold

    @property
    def tampered(self) -> bool:
        return self.score >= self.decision

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the original image."""
        return self.probability.shape[0], self.probability.shape[1]

    def overlay(self, color: tuple[int, int, int] = (255, 0, 0), alpha: float = 0.45,
                contour: bool = False, links: bool = True) -> Image.Image:
        """The image with masked pixels tinted ``color``; ``contour`` outlines the regions;
        ``links`` draws each copy-move pair found: its source box, its copy's box and a line
        from one to the other (on a photo called tampered)."""
        base = self.image if self.image is not None else np.full((*self.size, 3), 128, np.uint8)
        out = base.copy()
        mask = self.mask
        if mask.any():
            tint = np.asarray(color, dtype=np.float32) * alpha
            out[mask] = np.clip(base[mask] * (1.0 - alpha) + tint + 0.5, 0, 255).astype(np.uint8)
            if contour:
                out[mask & ~_erode(mask)] = color
        picture = Image.fromarray(out)
        if links and self.tampered and self.copy_move is not None:
            _draw_links(picture, self.copy_move)
        return picture

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no arrays)."""
        height, width = self.size
        summary = {"source": self.source, "width": width, "height": height,
                   "score": round(self.score, 6), "tampered": self.tampered,
                   "decision_threshold": self.decision, "threshold": self.threshold,
                   "tampered_fraction": round(float(self.mask.mean()), 6)}
        if self.network_score is not None:
            summary["network_score"] = round(self.network_score, 6)
        if self.copy_move is not None:
            summary["copy_move_score"] = round(self.copy_move.score, 6)
            summary["copy_move_pairs"] = [pair.to_dict() for pair in self.copy_move.pairs]
        return summary


LINK_COLOUR = (255, 220, 0)


def _draw_links(picture: Image.Image, found: CopyMoveEvidence) -> None:
    """Source and copy boxes of each copy-move pair, joined by a line from source to copy."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(picture.size) / 400))
    for pair in found.pairs:
        centres = []
        for box in (pair.source_box, pair.target_box):
            x0, y0, x1, y1 = box
            draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=LINK_COLOUR,
                           width=width)
            centres.append(((x0 + x1) / 2, (y0 + y1) / 2))
        draw.line(centres, fill=LINK_COLOUR, width=width)


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion; pixels on the image border count as inside, not as edges."""
    padded = np.pad(mask, 1, mode="edge")
    return (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
            & padded[1:-1, :-2] & padded[1:-1, 2:])
