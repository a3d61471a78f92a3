"""How much an aligned double-JPEG map adds to a model on forgeries saved as JPEG at the end.

A forgery saved as JPEG hides its error-level cue (an error level is dominated by the last
save), but a host compressed before the edit keeps the first compression's trace in its DCT
coefficients: on the 8x8 grid they cluster on the values the first quantisation step allows,
and an edited region does not. The map here is training-free, after Bianchi & Piva (2012, IEEE
TIFS 7(3)): per frequency, the final step is the lattice the coefficients sit on, the first step
the one whose double-quantisation histogram fits best, and each block's evidence the summed
log-ratio of single to double compression of its coefficients. It is scored alone and added
to the model's logit, per image (pixel AUC), grouped by the final save and the two steps' order.

    python benchmarks/double_jpeg.py SYNTHETIC_SET [--model MODEL] [--weights 0.1,0.3,1]

SYNTHETIC_SET is a folder written by `cflnet synth` (its manifest holds each sample's history).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy.fft import dctn
from sklearn.metrics import roc_auc_score
from synthetic_factors import edited_samples  # run as `python benchmarks/double_jpeg.py`

from cflnet_sdk import Localizer

FREQUENCIES = sorted(((u, v) for u in range(8) for v in range(8)),  # zig-zag order, AC 1-20
                     key=lambda f: (f[0] + f[1], f[1] if (f[0] + f[1]) % 2 else f[0]))[1:21]
MAX_BIN = 30  # quantised values beyond +-MAX_BIN are pooled at the ends and ignored
MIN_GAIN = 5.0  # log-likelihood a double-quantisation fit must gain over a single one


def block_dct(rgb: np.ndarray) -> np.ndarray:
    """Orthonormal 8x8 DCT of the JPEG luma on the image's own grid: (rows, cols, 8, 8)."""
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) - 128.0
    rows, cols = luma.shape[0] // 8, luma.shape[1] // 8
    blocks = luma[:rows * 8, :cols * 8].reshape(rows, 8, cols, 8).transpose(0, 2, 1, 3)
    return dctn(blocks, axes=(2, 3), norm="ortho")


def final_step(values: np.ndarray) -> int:
    """The largest step whose lattice the (non-zero) coefficients sit on best; 1 if none."""
    values = values[np.abs(values) > 1.5]
    if values.size < 30:
        return 1
    scores = {q: float(np.mean(np.cos(2 * np.pi * values / q))) for q in range(2, 41)}
    best = max(scores.values())
    return max(q for q, s in scores.items() if s >= best - 0.03) if best >= 0.5 else 1


def primary_counts(first: int, final: int) -> np.ndarray:
    """How many first-quantisation bins fall into each final bin -MAX_BIN..MAX_BIN."""
    reach = MAX_BIN * final // first + 3
    bins = np.rint(np.arange(-reach, reach + 1) * first / final).astype(int)
    bins = bins[np.abs(bins) <= MAX_BIN]
    return np.bincount(bins + MAX_BIN, minlength=2 * MAX_BIN + 1).astype(np.float64)


def block_evidence(values: np.ndarray) -> np.ndarray | None:
    """Per block, log p(single) / p(double) of one frequency's coefficients; None if no trace."""
    final = final_step(values.ravel())
    if final < 2:
        return None
    bins = np.clip(np.rint(values / final).astype(int), -MAX_BIN, MAX_BIN) + MAX_BIN
    histogram = np.bincount(bins.ravel(), minlength=2 * MAX_BIN + 1).astype(np.float64)
    histogram[[0, MAX_BIN, -1]] = 0  # zero and pooled ends say little about the steps
    if histogram.sum() < 30:
        return None
    envelope = np.convolve(histogram, np.ones(7) / 7, mode="same") + 1e-3
    single = envelope / envelope.sum()
    fits = {}
    for first in range(1, 3 * final + 1):
        if first != final:
            mixture = single * (0.8 * primary_counts(first, final) * first / final + 0.2)
            fits[first] = float(histogram @ np.log(mixture / mixture.sum() + 1e-9))
    first = max(fits, key=fits.__getitem__)
    if fits[first] - float(histogram @ np.log(single + 1e-9)) < MIN_GAIN:
        return None
    ratio = -np.log(primary_counts(first, final) * first / final + 0.05)
    ratio[MAX_BIN] = 0.0
    return ratio[bins]


def double_jpeg_map(rgb: np.ndarray) -> np.ndarray:
    """HxW evidence that each 8x8 block was compressed once where the rest was twice."""
    coefficients = block_dct(rgb)
    evidence = np.zeros(coefficients.shape[:2])
    for u, v in FREQUENCIES:
        found = block_evidence(coefficients[:, :, u, v])
        if found is not None:
            evidence += found
    full = np.zeros(rgb.shape[:2])
    full[:evidence.shape[0] * 8, :evidence.shape[1] * 8] = np.kron(evidence, np.ones((8, 8)))
    return full


def group_of(parameters: dict) -> str:
    """Final save, and for JPEG the order of the host's first and the final quality."""
    final = [step["quality"] for step in parameters.get("post", []) if step["op"] == "save-jpeg"]
    if not final:
        return "saved losslessly"
    host = parameters.get("host_jpeg")
    if host is None:
        return "JPEG, host not JPEG'd before"
    return "JPEG, first quality lower" if host < final[0] else "JPEG, first quality not lower"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="a folder written by `cflnet synth`")
    parser.add_argument("--model", default=None, help="model file (default: the shipped one)")
    parser.add_argument("--weights", default="0.1,0.3,1",
                        help="weights of the map added to the model's logit")
    args = parser.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    localizer = Localizer(args.model) if args.model else Localizer()
    columns = ["model", "double JPEG", *(f"fused {w:g}" for w in weights)]
    groups: dict[str, list[list[float]]] = defaultdict(list)
    for rgb, mask, parameters in edited_samples(args.data):
        probability = np.clip(localizer.predict(rgb).probability, 1e-4, 1 - 1e-4)
        logit = np.log(probability / (1 - probability))
        evidence = np.clip(double_jpeg_map(rgb), -20, 20)
        maps = [probability, evidence, *(logit + w * evidence for w in weights)]
        aucs = [float(roc_auc_score(mask.ravel(), m.ravel())) for m in maps]
        groups["all"].append(aucs)
        groups[group_of(parameters)].append(aucs)
    print(f"{'':>30}  {'images':>6}  " + "  ".join(f"{c:>11}" for c in columns))
    for name, rows in sorted(groups.items()):
        print(f"{name:>30}  {len(rows):6d}  "
              + "  ".join(f"{m:11.3f}" for m in np.mean(rows, axis=0)))


if __name__ == "__main__":
    main()
