"""The default verdict: the network's map and the copy-move evidence, fused by one rule.

CFL-Net reads traces (noise, demosaicing, compression) and cannot see a region cloned within the
photo, which carries the photo's own traces; matching the photo against itself
(:mod:`cflnet_sdk.runtime.copymove`) sees exactly that, and nothing else. The rule:

- ``probability``: per pixel, the larger of the two maps, so each evidence shows what it found;
- ``score``: the larger of the network's score and the copy-move score mapped onto the
  network's scale (:func:`on_decision_scale`), which puts the copy-move operating point on the
  model's decision threshold. The verdict is then ``tampered`` exactly when either evidence
  passes its own operating point, and no evidence can lower another's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cflnet_sdk.prediction import Prediction
    from cflnet_sdk.runtime.copymove import CopyMoveEvidence


def on_decision_scale(score: float, threshold: float, decision: float) -> float:
    """``score`` of an evidence whose operating point is ``threshold``, moved onto the scale
    whose operating point is ``decision``: piecewise linear and increasing, 0 -> 0,
    ``threshold`` -> ``decision``, 1 -> 1, so ranks and the verdict are kept."""
    if score < threshold:
        return decision * score / threshold if threshold > 0 else decision
    if threshold >= 1.0:
        return 1.0
    return decision + (1.0 - decision) * (score - threshold) / (1.0 - threshold)


def fuse(network: np.ndarray, network_score: float, copy_move: np.ndarray,
         copy_move_score: float, copy_move_threshold: float, decision: float
         ) -> tuple[np.ndarray, float]:
    """(fused probability map, fused score) of one photo, both maps at its own size."""
    probability = np.maximum(network, copy_move)
    moved = on_decision_scale(copy_move_score, copy_move_threshold, decision)
    return probability, max(network_score, moved)


def fused_prediction(prediction: Prediction, found: CopyMoveEvidence,
                     copy_move_threshold: float) -> Prediction:
    """The network's ``prediction`` with ``found`` fused in, each evidence kept beside it: what
    ``Localizer`` and a served ensemble's last step both return."""
    probability, score = fuse(prediction.probability, prediction.score, found.probability,
                              found.score, copy_move_threshold, prediction.decision)
    return replace(prediction, probability=probability, score=score,
                   network_score=prediction.score, copy_move=found,
                   evidence={"network": prediction.probability, "copy-move": found.probability})
