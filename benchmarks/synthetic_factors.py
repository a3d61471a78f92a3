"""Per-image pixel AUC of a model on a synthetic set, beside the centre prior and ELA, grouped by
what was done to each sample: the final save (JPEG or lossless), the trace-hiding operations,
the host's JPEG history before the edit, the edited area and the kind. Tells which histories a
model misses.

    python benchmarks/synthetic_factors.py SYNTHETIC_SET [--model MODEL]

SYNTHETIC_SET is a folder written by `cflnet synth` (its manifest holds each sample's history).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from cflnet_sdk import Localizer
from cflnet_sdk.images import load_image
from cflnet_sdk.training.baselines import BASELINES, LABELS
from cflnet_sdk.training.data.readers import read_mask

MAPS = ("model", *LABELS.values())


def factors(parameters: dict[str, Any], mask: np.ndarray) -> dict[str, str]:
    """The groups one sample falls in."""
    ops = [step["op"] for step in parameters.get("post", [])]
    area = mask.mean()
    return {"kind": parameters["kind"],
            "final save": "JPEG" if "save-jpeg" in ops else "lossless",
            "hidden by": "+".join(op for op in ops if op != "save-jpeg") or "nothing",
            "host JPEG'd before the edit": "yes" if "host_jpeg" in parameters else "no",
            "edited area": "< 2%" if area < 0.02 else "2-10%" if area < 0.1 else "> 10%"}


def edited_samples(folder: Path) -> Iterator[tuple[np.ndarray, np.ndarray, dict[str, Any]]]:
    """(RGB, mask, parameters) of every edited sample of a `cflnet synth` set whose mask has
    both classes (pristine samples and single-class masks have no pixel AUC)."""
    for line in (folder / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        if not record.get("mask"):
            continue  # pristine
        mask = read_mask(folder / record["mask"])
        if mask.all() or not mask.any():
            continue
        yield load_image(folder / record["image"]), mask, record["parameters"]


def image_aucs(localizer: Localizer, folder: Path,
               ) -> list[tuple[tuple[float, ...], dict[str, str]]]:
    """(AUCs of MAPS, factors) of every edited sample whose mask has both classes."""
    scored = []
    for rgb, mask, parameters in edited_samples(folder):  # decoded once for all maps
        maps = (localizer.predict(rgb).probability,
                *(BASELINES[key](rgb) for key in LABELS))
        aucs = tuple(float(roc_auc_score(mask.ravel(), m.ravel())) for m in maps)
        scored.append((aucs, factors(parameters, mask)))
    return scored


def report(scored: list[tuple[tuple[float, ...], dict[str, str]]],
           echo: Callable[[str], None] = print) -> None:
    echo(f"{'':>28}  {'':>14}  {'images':>6}  " + "  ".join(f"{m:>12}" for m in MAPS))
    groups: dict[tuple[str, str], list[tuple[float, ...]]] = defaultdict(list)
    for aucs, where in scored:
        groups["all", ""].append(aucs)
        for factor, value in where.items():
            groups[factor, value].append(aucs)
    order = ["all", *scored[0][1]]
    for (factor, value), rows in sorted(groups.items(),
                                        key=lambda item: (order.index(item[0][0]), item[0][1])):
        means = np.mean(rows, axis=0)
        echo(f"{factor:>28}  {value:>14}  {len(rows):6d}  "
             + "  ".join(f"{mean:12.3f}" for mean in means))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder written by `cflnet synth`")
    parser.add_argument("--model", default=None, help="model file (default: the shipped one)")
    args = parser.parse_args()
    localizer = Localizer(args.model) if args.model else Localizer()
    report(image_aucs(localizer, args.data))


if __name__ == "__main__":
    main()
