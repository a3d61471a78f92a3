"""The default verdict: the network's map and the copy-move evidence, fused by one rule.

CFL-Net reads traces (noise, demosaicing, compression) and cannot see a region cloned within the
photo, which carries the photo's own traces; matching the photo against itself
(:mod:`cflnet_sdk.runtime.copymove`) sees exactly that, and nothing else. Both fusions move the
copy-move evidence onto the network's scale by one piecewise-linear map
(:func:`on_decision_scale`) that puts the copy-move operating point on a point of that scale:

- ``score``: the larger of the network's score and the copy-move score, its operating point on
  the model's decision threshold. The verdict is then ``tampered`` exactly when either evidence
  passes its own operating point, and no evidence can lower another's.
- ``probability``: per pixel, the larger of the network's map and the copy-move map, its
  operating point on the photo's strongest network pixel (or on the mask threshold when that
  is higher). A pair that passes its operating point then ranks above everything the network
  marked in the photo, a weaker one in proportion below: the network cannot see a copy, so its
  other marks in a photo with a verified copy are more likely noise than a second edit. Pixels
  without a pair keep the network's value.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cflnet_sdk.prediction import Prediction
    from cflnet_sdk.runtime.copymove import CopyMoveEvidence


def on_decision_scale(score: float | np.ndarray, threshold: float,
                      decision: float) -> float | np.ndarray:
    """``score`` of an evidence whose operating point is ``threshold`` (one score, or every
    value of a map), moved onto the scale whose operating point is ``decision``: piecewise
    linear and increasing, 0 -> 0, ``threshold`` -> ``decision``, 1 -> 1, so ranks and the
    verdict are kept. A map keeps its dtype."""
    values = np.asarray(score)
    below = values * (decision / threshold) if threshold > 0 else np.full_like(values, decision)
    above = 1.0 if threshold >= 1.0 else \
        decision + (values - threshold) * ((1.0 - decision) / (1.0 - threshold))
    moved = np.where(values < threshold, below, above)
    return float(moved) if np.ndim(score) == 0 else moved.astype(values.dtype, copy=False)


def fuse(network: np.ndarray, network_score: float, copy_move: np.ndarray,
         copy_move_score: float, copy_move_threshold: float, decision: float,
         mask_threshold: float) -> tuple[np.ndarray, float]:
    """(fused probability map, fused score) of one photo, both maps at its own size."""
    probability = network.copy()
    paired = copy_move > 0  # a few regions at most: the rest keeps the network's value
    if paired.any():
        top = max(mask_threshold, float(network.max()))
        lifted = on_decision_scale(copy_move[paired], copy_move_threshold, top)
        probability[paired] = np.maximum(network[paired], lifted)
    moved = on_decision_scale(copy_move_score, copy_move_threshold, decision)
    return probability, max(network_score, moved)


def fused_prediction(prediction: Prediction, found: CopyMoveEvidence,
                     copy_move_threshold: float) -> Prediction:
    """The network's ``prediction`` with ``found`` fused in, each evidence kept beside it: what
    ``Localizer`` and a served ensemble's last step both return."""
    probability, score = fuse(prediction.probability, prediction.score, found.probability,
                              found.score, copy_move_threshold, prediction.decision,
                              prediction.threshold)
    return replace(prediction, probability=probability, score=score,
                   network_score=prediction.score, copy_move=found,
                   evidence={"network": prediction.probability, "copy-move": found.probability})
