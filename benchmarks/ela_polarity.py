"""How often the edited region has a higher error level than the rest of the image, per dataset
and kind: a check of how closely synthetic forgeries' compression traces follow real ones.

A model trained on forgeries whose edited regions are as often darker as brighter in error level
cannot learn the rule that real splices follow (on MISD the region is brighter in 97% of images).

    python benchmarks/ela_polarity.py ../shared/data/real-val/misd HELD_OUT_SYNTH [--quality 90]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np

from cflnet_sdk.contract import error_level
from cflnet_sdk.training.data.readers import open_dataset


def region_and_rest(rgb: np.ndarray, mask: np.ndarray, quality: int) -> tuple[float, float]:
    """Mean error level inside the mask and outside it."""
    level = error_level(rgb, quality).astype(np.float32)
    return float(level[mask].mean()), float(level[~mask].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="datasets (any format `cflnet evaluate` reads)")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality of the re-save")
    args = parser.parse_args()
    for path in args.data:
        dataset = open_dataset(path, on_error="skip")
        means: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for index, record in enumerate(dataset):
            rgb, mask = dataset.load(index)
            if mask.shape != rgb.shape[:2] or mask.all() or not mask.any():
                continue  # pristine, or no region to compare
            pair = region_and_rest(rgb, mask, args.quality)
            means[record.kind or "all"].append(pair)
            if record.kind:
                means["all"].append(pair)
        if len(means) == 2:  # one kind: its row is the "all" row
            del means["all"]
        for kind, pairs in sorted(means.items()):
            inside, outside = np.array(pairs).T
            print(f"{path}  {kind:>10}  {len(pairs):4d} images  region brighter in "
                  f"{(inside > outside).mean():.1%}  median ratio "
                  f"{np.median(inside / np.maximum(outside, 1e-6)):.2f}")


if __name__ == "__main__":
    main()
