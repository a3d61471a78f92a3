"""The fixed input on which the shipped default model's predictions are pinned.

`scripts/build_default_model.sh` records the model's answer in tests/data/ when it ships a
model; tests/test_default_model.py checks that the package still gives that answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).parent / "data" / "default_model_reference.json"
REFERENCE_IMAGE = Path(__file__).parent / "data" / "default_model_reference.png"


def reference_image() -> np.ndarray:
    """A synthetic splice at 256x192, kept as a file so generator changes cannot move the pin."""
    from cflnet_sdk.images import load_image

    return load_image(REFERENCE_IMAGE)


def answer(localizer) -> dict[str, float]:
    prediction = localizer.predict(reference_image())
    return {"score": prediction.score,
            "mean_probability": float(prediction.probability.mean(dtype=np.float64)),
            "mask_fraction": float(prediction.mask.mean())}


if __name__ == "__main__":  # record the current default model's answer
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from cflnet_sdk import Localizer

    REFERENCE.parent.mkdir(exist_ok=True)
    REFERENCE.write_text(json.dumps(answer(Localizer()), indent=2) + "\n")
    print(REFERENCE.read_text())
