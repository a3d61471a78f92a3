"""The paper's evaluation metrics, honest variants first, streaming in constant memory.

Per-image pixel ROC AUC averaged over images is the headline. The paper's number takes
``max(AUC(p), AUC(1 - p))`` per image, which rewards a map that is exactly wrong; it is reported
separately under a name that says so. Pooled pixel metrics come from fixed-size histograms, so a
dataset of any size fits in memory. numpy, SciPy and scikit-learn only (no torch): ``cflnet
evaluate`` and the runtime side use it too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from cflnet_sdk.errors import DataError

DEFAULT_BINS = 10_000


def _ratio(numerator: float, denominator: float) -> float | None:
    return float(numerator / denominator) if denominator > 0 else None


def binary_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Exact ROC AUC of ``scores`` for boolean ``labels`` of both classes: the Mann-Whitney
    statistic from average ranks (tied scores count one half), which is what scikit-learn's
    ``roc_auc_score`` computes; without its input checks, which sorted each map several times
    and took 40% of an evaluation (9 ms instead of 90 ms for a 384x256 map)."""
    labels = np.asarray(labels, dtype=bool).ravel()
    ranks = rankdata(np.asarray(scores).ravel())
    positives = int(np.count_nonzero(labels))
    negatives = labels.size - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2)
                 / (positives * negatives))


def histogram_auc(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """ROC AUC from per-bin counts (ties inside a bin count one half, like sklearn's ties)."""
    n_pos, n_neg = float(positive.sum()), float(negative.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.cumsum(negative, dtype=np.float64) - negative
    wins = (positive.astype(np.float64) * (below + 0.5 * negative)).sum()
    return float(wins / (n_pos * n_neg))


class MetricAccumulator:
    """Feed one image at a time with ``update``; ``compute`` returns plain, JSON-ready numbers.

    ``probability``: HxW tampered-class probability in [0, 1]; ``mask``: HxW bool ground truth
    (tampered = True); ``score``: the image-level tamper score, or None if there is none;
    ``predicted``: the mask the model shows (default ``probability >= threshold``).
    ``decision``: the image-level operating point (``score >= decision`` is the verdict
    ``tampered``), which false alarms on unedited images (no tampered pixel), the share of
    their pixels shown and detections on forged images are counted at; None for a map without
    an operating point (a training-free baseline), which then has none of these.
    Undefined metrics (e.g. image AUC when every image is tampered) are ``None``.
    """

    def __init__(self, threshold: float = 0.5, bins: int = DEFAULT_BINS,
                 decision: float | None = 0.5) -> None:
        if not 0.0 <= threshold <= 1.0 or not 0.0 <= (decision or 0.0) <= 1.0 or bins < 2:
            raise DataError(f"threshold {threshold} and decision {decision} must be in [0, 1] "
                            f"and bins {bins} >= 2")
        self.threshold, self.bins, self.decision = threshold, bins, decision
        self.positive = np.zeros(bins, dtype=np.int64)
        self.negative = np.zeros(bins, dtype=np.int64)
        self.tp = self.fp = self.fn = self.tn = 0
        self.images = self.tampered_images = self.skipped_single_class = 0
        self.auc_sum = self.flip_auc_sum = 0.0
        self.auc_images = 0
        self.f1_sum = self.iou_sum = 0.0
        self.f1_images = 0
        self.labels: list[bool] = []
        self.scores: list[float] = []
        self.without_score = 0
        self.unedited_masked = 0.0  # sum over unedited images of the share of pixels shown

    def update(self, probability: np.ndarray, mask: np.ndarray, score: float | None = None,
               predicted: np.ndarray | None = None) -> float | None:
        """Add one image; return its honest pixel AUC (None if its mask is all one class),
        so callers can compare models image by image without sorting the pixels again."""
        probability = np.asarray(probability, dtype=np.float64)
        mask = np.asarray(mask).astype(bool)
        if probability.shape != mask.shape or probability.ndim != 2:
            raise DataError(f"probability {probability.shape} and mask {mask.shape} must be "
                            "HxW arrays of the same size; resize the prediction to the mask")
        if not np.isfinite(probability).all():
            raise DataError("probability map holds NaN or infinity; check the model output")
        probability = np.clip(probability, 0.0, 1.0)
        predicted = probability >= self.threshold if predicted is None else \
            np.asarray(predicted, dtype=bool)
        if predicted.shape != mask.shape:
            raise DataError(f"predicted mask {predicted.shape} and mask {mask.shape} must be "
                            "the same size")
        self.images += 1
        self.tampered_images += int(mask.any())
        if not mask.any():
            self.unedited_masked += float(np.count_nonzero(predicted)) / mask.size
        self._update_pooled(probability, mask, predicted)
        auc = self._update_per_image(probability, mask)
        if score is None:
            self.without_score += 1
        else:
            self.labels.append(bool(mask.any()))
            self.scores.append(float(score))
        return auc

    def _update_pooled(self, probability: np.ndarray, mask: np.ndarray,
                       predicted: np.ndarray) -> None:
        index = np.minimum((probability * self.bins).astype(np.int64), self.bins - 1)
        self.positive += np.bincount(index[mask], minlength=self.bins)
        self.negative += np.bincount(index[~mask], minlength=self.bins)
        tp = int(np.count_nonzero(predicted & mask))
        fp = int(np.count_nonzero(predicted & ~mask))
        fn = int(np.count_nonzero(~predicted & mask))
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        self.tn += mask.size - tp - fp - fn
        if tp + fn > 0:  # F1/IoU of an image without tampered pixels is undefined
            self.f1_sum += 2 * tp / (2 * tp + fp + fn)
            self.iou_sum += tp / (tp + fp + fn)
            self.f1_images += 1

    def _update_per_image(self, probability: np.ndarray, mask: np.ndarray) -> float | None:
        tampered = int(np.count_nonzero(mask))
        if tampered == 0 or tampered == mask.size:
            self.skipped_single_class += 1
            return None
        auc = binary_auc(mask, probability)
        self.auc_sum += auc
        self.flip_auc_sum += max(auc, 1.0 - auc)
        self.auc_images += 1
        return auc

    def merge(self, other: MetricAccumulator) -> MetricAccumulator:
        """Add another accumulator's images (e.g. from another process) into this one."""
        if (other.bins, other.threshold, other.decision) != \
                (self.bins, self.threshold, self.decision):
            raise DataError("cannot merge accumulators with different bins or thresholds")
        self.positive += other.positive
        self.negative += other.negative
        for name in ("tp", "fp", "fn", "tn", "images", "tampered_images", "skipped_single_class",
                     "auc_sum", "flip_auc_sum", "auc_images", "f1_sum", "iou_sum", "f1_images",
                     "without_score", "unedited_masked"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.labels += other.labels
        self.scores += other.scores
        return self

    def _best_threshold(self) -> dict[str, float | None]:
        # Predicted tampered at threshold k/bins <=> bin >= k: counts from reversed cumsums.
        tp = np.cumsum(self.positive[::-1])[::-1].astype(np.float64)
        fp = np.cumsum(self.negative[::-1])[::-1].astype(np.float64)
        fn = float(self.positive.sum()) - tp
        denominator = 2 * tp + fp + fn
        if not (denominator > 0).any() or self.positive.sum() == 0:
            return {"pixel_f1_best": None, "pixel_iou_best": None, "best_threshold": None}
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
        best = int(np.argmax(f1))
        return {"pixel_f1_best": float(f1[best]),
                "pixel_iou_best": float(tp[best] / (tp[best] + fp[best] + fn[best])),
                "best_threshold": best / self.bins}

    def _image_auc(self) -> float | None:
        if len(set(self.labels)) < 2:
            return None
        return float(roc_auc_score(np.array(self.labels), np.array(self.scores)))

    def scores_of(self, tampered: bool) -> np.ndarray:
        """The image scores of the forged (``True``) or the unedited (``False``) images."""
        labels = np.array(self.labels, dtype=bool)
        return np.array(self.scores, dtype=np.float64)[labels == tampered]

    def _verdicts(self) -> dict[str, Any]:
        unedited = self.images - self.tampered_images
        verdicts: dict[str, Any] = {"decision_threshold": self.decision,
                                    "unedited_images": unedited}
        if self.decision is None:
            return verdicts | dict.fromkeys(("false_alarm_rate", "unedited_mask_fraction",
                                             "detection_rate"))
        return verdicts | {
            "false_alarm_rate": _share_at_or_above(self.scores_of(False), self.decision),
            "unedited_mask_fraction": _ratio(self.unedited_masked, unedited),
            "detection_rate": _share_at_or_above(self.scores_of(True), self.decision),
        }

    def compute(self) -> dict[str, Any]:
        tp, fp, fn = self.tp, self.fp, self.fn
        return {
            "images": self.images,
            "pixel_auc": _ratio(self.auc_sum, self.auc_images),
            "pixel_auc_flip_invariant_paper": _ratio(self.flip_auc_sum, self.auc_images),
            "pixel_auc_images": self.auc_images,
            "pixel_auc_skipped_single_class": self.skipped_single_class,
            "pooled_pixel_auc": histogram_auc(self.positive, self.negative),
            "threshold": self.threshold,
            "pixel_f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "pixel_iou": _ratio(tp, tp + fp + fn),
            "pixel_f1_image_mean": _ratio(self.f1_sum, self.f1_images),
            "pixel_iou_image_mean": _ratio(self.iou_sum, self.f1_images),
            "f1_images": self.f1_images,
            **self._best_threshold(),
            "image_auc": self._image_auc(),
            "image_auc_images": len(self.labels),
            "images_without_score": self.without_score,
            "pixels": tp + fp + fn + self.tn,
            "tampered_pixels": tp + fn,
            "tampered_images": self.tampered_images,
            **self._verdicts(),
        }


def _share_at_or_above(scores: np.ndarray, threshold: float | None) -> float | None:
    return float((scores >= threshold).mean()) if len(scores) and threshold is not None else None


def detection(forged: np.ndarray, unedited: np.ndarray, decision: float | None = None,
              false_alarms: float = 0.05) -> dict[str, float | int | None]:
    """Image-level detection of forged images among unedited ones, from their scores.

    ``detection_auc``: ROC AUC of the scores (forged positive). ``detected_at_fa``: the share of
    forged images scoring above the ``1 - false_alarms`` quantile of the unedited scores, a
    comparison at equal false alarms that needs no operating point (so baselines get it too).
    With ``decision``: ``detection_rate`` and ``false_alarm_rate`` at that operating point.
    """
    forged, unedited = np.asarray(forged, np.float64), np.asarray(unedited, np.float64)
    result: dict[str, float | int | None] = {"forged_images": len(forged),
                                             "unedited_images": len(unedited)}
    both = len(forged) > 0 and len(unedited) > 0
    labels = np.r_[np.ones(len(forged)), np.zeros(len(unedited))]
    result["detection_auc"] = float(roc_auc_score(labels, np.r_[forged, unedited])) \
        if both else None
    cut = np.quantile(unedited, 1.0 - false_alarms) if len(unedited) else None
    result["detected_at_fa"] = float((forged > cut).mean()) if both else None
    result["fa_for_detected_at_fa"] = false_alarms
    result["detection_rate"] = _share_at_or_above(forged, decision)
    result["false_alarm_rate"] = _share_at_or_above(unedited, decision)
    return result
