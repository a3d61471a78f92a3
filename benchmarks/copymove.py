"""Measures the copy-move evidence module: pixel AUC on real and synthetic copy-moves, false
alarms on unedited photos and on splices, seconds per megapixel, and peak memory on a 50 MP photo.

    python benchmarks/copymove.py accuracy [--noso DIR] [--photos DIR] [--per-photo 2] [--seed 0]
    python benchmarks/copymove.py larger [--photos DIR] [--seed 7]   # copy-moves at 1, 2 and 4 MP
    python benchmarks/copymove.py verdict [--model FILE]   # the same sets through Localizer()
    python benchmarks/copymove.py alarms [--data DIR ...] [--threshold 0.55]
    python benchmarks/copymove.py operating-point [--rate 0.005]  # chooses SCORE_THRESHOLD
    python benchmarks/copymove.py speed [--megapixels 1 12]
    python benchmarks/copymove.py memory [--megapixels 50]

The synthetic set is built here from the held-out photos of ``--photos`` (the one-in-ten split
that training never sees): a region of 1-10% of the photo is copied elsewhere after a random
translation, rotation, scaling or mirroring (or all at once), and half the forgeries are re-saved
as JPEG at quality 75-95. The pixel AUC is sklearn's per image, averaged over images.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from sklearn.metrics import roc_auc_score

from cflnet_sdk.runtime.copymove import SCORE_THRESHOLD, CopyMoveDetector
from cflnet_sdk.training.data.ops import jpeg_roundtrip
from cflnet_sdk.training.data.readers import open_dataset
from cflnet_sdk.training.data.sources import PhotoSource, listed_photos

UNEDITED_LIST = Path(__file__).resolve().parents[1] / "docs" / "unedited-validation-photos.txt"
REAL_VAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-val"
PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "photos"
KINDS = ("translation", "rotation", "scale", "mirror", "mixed")


def region_mask(rng: np.random.Generator, height: int, width: int, share: float) -> np.ndarray:
    """A random ellipse or polygon covering about ``share`` of the photo, at its centre."""
    mask = np.zeros((height, width), np.uint8)
    radius = np.sqrt(share * height * width / np.pi)
    centre = (width / 2, height / 2)
    if rng.random() < 0.5:
        ratio = rng.uniform(0.6, 1.6)
        axes = (int(radius * np.sqrt(ratio)), int(radius / np.sqrt(ratio)))
        cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, rng.uniform(0, 180), 0, 360,
                    1, -1)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radii = radius * rng.uniform(0.7, 1.3, 9)
        points = np.stack([centre[0] + radii * np.cos(angles),
                           centre[1] + radii * np.sin(angles)], 1)
        cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    return mask


def kind_transform(rng: np.random.Generator, kind: str) -> np.ndarray:
    """The 2x2 linear part of a copy of this kind: rotation, scale, mirror or all three."""
    angle = scale = 0.0
    mirror = False
    if kind in ("rotation", "mixed"):
        angle = rng.choice([-1, 1]) * rng.uniform(5, 90)
    if kind in ("scale", "mixed"):
        scale = rng.choice([-1, 1]) * rng.uniform(np.log(1.1), np.log(1.5))
    if kind in ("mirror", "mixed"):
        mirror = True
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    linear = np.exp(scale) * np.array([[c, -s], [s, c]])
    return linear @ np.diag([-1.0, 1.0]) if mirror else linear


def copy_move(rgb: np.ndarray, rng: np.random.Generator,
              kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The photo with one region copied elsewhere, the source-and-copy mask, and the transform."""
    height, width = rgb.shape[:2]
    shape = region_mask(rng, height, width, rng.uniform(0.01, 0.10))
    linear = kind_transform(rng, kind)
    for _ in range(50):
        source = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height])
        target = np.array([rng.uniform(0.15, 0.85) * width, rng.uniform(0.15, 0.85) * height])
        move = np.float64([[1, 0, source[0] - width / 2], [0, 1, source[1] - height / 2]])
        src_mask = cv2.warpAffine(shape, move, (width, height), flags=cv2.INTER_NEAREST)
        transform = np.hstack([linear, (target - linear @ source)[:, None]])
        dst_mask = cv2.warpAffine(src_mask, transform, (width, height), flags=cv2.INTER_NEAREST)
        inside = dst_mask.sum() >= 0.97 * src_mask.sum() * abs(np.linalg.det(linear))
        if src_mask.any() and inside and not (src_mask & dst_mask).any():
            break
    else:
        return None
    moved = cv2.warpAffine(rgb, transform, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    forged = np.where(dst_mask[..., None] > 0, moved, rgb)
    return forged, (src_mask | dst_mask) > 0, transform


def synthetic_set(photos: Path, per_photo: int, seed: int):
    """Yields (name, group, rgb, mask) for the synthetic copy-moves of the held-out photos."""
    source = PhotoSource(folders=(str(photos),), split="held-out")
    rng = np.random.default_rng(seed)
    for index in range(len(source)):
        for repeat in range(per_photo):
            kind = KINDS[(index * per_photo + repeat) % len(KINDS)]
            made = copy_move(source.photo(index), rng, kind)
            if made is None:
                continue
            forged, mask, _ = made
            group = kind
            if rng.random() < 0.5:
                quality = int(rng.integers(75, 96))
                forged, group = jpeg_roundtrip(forged, quality), f"{kind}+jpeg"
            yield f"{Path(source.names[index]).name}#{repeat}", group, forged, mask


def larger_set(photos: Path, seed: int):
    """Yields (name, group, rgb, mask): each held-out photo resized to 1, 2 or 4 MP in turn
    with one copy-move of each kind in turn, half re-saved at JPEG q75-95.

    The synthetic set's photos are mostly 400-600 pixels and NoSo's 0.79 MP: a detector change
    that loses the finest keypoints loses copies only in larger photos (docs/benchmarks.md).
    """
    source = PhotoSource(folders=(str(photos),), split="held-out")
    rng = np.random.default_rng(seed)
    for index in range(len(source)):
        photo, megapixels = source.photo(index), (1.0, 2.0, 4.0)[index % 3]
        scale = np.sqrt(megapixels * 1e6 / (photo.shape[0] * photo.shape[1]))
        size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
        photo = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC if scale > 1 else
                           cv2.INTER_AREA)
        made = copy_move(photo, rng, KINDS[index % len(KINDS)])
        if made is None:
            continue
        forged, mask, _ = made
        if rng.random() < 0.5:
            forged = jpeg_roundtrip(forged, int(rng.integers(75, 96)))
        yield Path(source.names[index]).name, KINDS[index % len(KINDS)], forged, mask


def dataset_items(path: Path):
    """Yields (name, kind, rgb, mask) of a real-val dataset folder."""
    dataset = open_dataset(str(path), on_error="skip")
    for index, record in enumerate(dataset):
        rgb, mask = dataset.load(index)
        yield Path(record.image).name, record.kind or "all", rgb, mask


def score_items(detector: CopyMoveDetector, items, verbose: bool) -> dict[str, list]:
    """Per-group lists of (auc, score, seconds)."""
    results: dict[str, list] = defaultdict(list)
    for name, group, rgb, mask in items:
        start = time.perf_counter()
        evidence = detector.analyse(rgb)
        seconds = time.perf_counter() - start
        single = mask.all() or not mask.any()
        auc = np.nan if single else roc_auc_score(mask.ravel(), evidence.probability.ravel())
        results[group].append((auc, evidence.score, seconds))
        if verbose:
            print(f"  {name:28s} {group:18s} auc {auc:.3f} score {evidence.score:.3f} "
                  f"pairs {len(evidence.pairs)} {seconds:.2f}s", flush=True)
    return results


def report(title: str, results: dict[str, list]) -> None:
    every = [row for rows in results.values() for row in rows]
    groups = sorted(results.items()) + ([("all", every)] if len(results) > 1 else [])
    for group, rows in groups:
        auc, score, seconds = np.array(rows).T
        print(f"{title:10s} {group:18s} {len(rows):4d} images  pixel AUC {np.nanmean(auc):.3f}  "
              f"found {np.sum(score >= SCORE_THRESHOLD):3d}  median score {np.median(score):.3f}"
              f"  {seconds.mean():.2f} s/image")


def accuracy(args: argparse.Namespace) -> None:
    detector = CopyMoveDetector()
    report("NoSo", score_items(detector, dataset_items(args.noso), args.verbose))
    report("synthetic", score_items(detector, synthetic_set(args.photos, args.per_photo,
                                                             args.seed), args.verbose))


def larger(args: argparse.Namespace) -> None:
    report("larger", score_items(CopyMoveDetector(), larger_set(args.photos, args.seed),
                                 args.verbose))


def verdict(args: argparse.Namespace) -> None:
    """Pixel AUC of the fused verdict beside each evidence alone, and the share called tampered."""
    from cflnet_sdk import Localizer

    with Localizer(args.model) as localizer:
        for title, items in (("NoSo", dataset_items(args.noso)),
                             ("synthetic", synthetic_set(args.photos, args.per_photo,
                                                         args.seed))):
            aucs: dict[str, list[float]] = defaultdict(list)
            called = []
            for _, _, rgb, mask in items:
                prediction = localizer.predict(rgb)
                for evidence, probability in {"fused": prediction.probability,
                                              **prediction.evidence}.items():
                    aucs[evidence].append(roc_auc_score(mask.ravel(), probability.ravel()))
                called.append(prediction.tampered)
            print(f"{title:10s} {len(called):4d} images  " + "  ".join(
                f"{evidence} {np.mean(values):.4f}" for evidence, values in aucs.items())
                + f"  called tampered {np.mean(called):.1%}", flush=True)


def alarms(args: argparse.Namespace) -> None:
    detector = CopyMoveDetector()
    for path in args.data:
        scores, flagged = [], []
        for _, _, rgb, _ in dataset_items(path):
            evidence = detector.analyse(rgb)
            scores.append(evidence.score)
            flagged.append(float((evidence.probability >= args.threshold).mean()))
        scores = np.array(scores)
        print(f"{path.name:10s} {len(scores):4d} images  score >= {args.threshold}: "
              f"{(scores >= args.threshold).mean():.1%}  any pair: {(scores > 0).mean():.1%}  "
              f"mean share of pixels flagged {np.mean(flagged):.4%}")


def training_photos(photos: Path):
    """Yields (name, rgb) of the photos training draws from, less those the validation set
    holds (``docs/unedited-validation-photos.txt``): unedited photos the detector was never
    measured on, on which its operating point is chosen."""
    source = PhotoSource(folders=(str(photos),), split="train",
                         exclude=listed_photos(UNEDITED_LIST))
    for index, name in enumerate(source.names):
        yield Path(name).name, source.photo(index)


def operating_point(args: argparse.Namespace) -> None:
    """The lowest score threshold that at most ``--rate`` of the training photos reach, as they
    are and after each re-save (every group held to the rate)."""
    from cflnet_sdk.training.calibrate import worst_group_point

    detector = CopyMoveDetector()
    groups: dict[str, list[float]] = defaultdict(list)
    for name, rgb in training_photos(args.photos):
        for quality in [None, *args.resave_jpeg]:
            score = detector.analyse(rgb if quality is None else jpeg_roundtrip(rgb, quality)).score
            groups["as they are" if quality is None else f"re-saved q{quality}"].append(score)
            if args.verbose and score > 0.4:
                print(f"  {name:40s} q{quality} score {score:.3f}", flush=True)
    threshold, hardest = worst_group_point(groups, args.rate)
    for group, scores in groups.items():
        print(f"{group:14s} {len(scores)} photos: " + ", ".join(
            f"{np.mean(np.array(scores) >= t):.1%} >= {t}" for t in (0.5, 0.55, 0.6, threshold)))
    print(f"operating point for at most {args.rate:.1%} of each group: {threshold:.4f} "
          f"(set by {hardest})")


def big_photo(megapixels: float, seed: int) -> np.ndarray:
    """A held-out camera photo resized to ``megapixels``, with a rotated copy-move in it."""
    source = PhotoSource(folders=(str(PHOTOS),), split="held-out")
    index = max(range(len(source)), key=lambda i: source.photo(i).size)
    photo = source.photo(index)
    scale = np.sqrt(megapixels * 1e6 / (photo.shape[0] * photo.shape[1]))
    size = (round(photo.shape[1] * scale), round(photo.shape[0] * scale))
    photo = cv2.resize(photo, size, interpolation=cv2.INTER_CUBIC)
    made = copy_move(photo, np.random.default_rng(seed), "rotation")
    return made[0] if made is not None else photo


def speed(args: argparse.Namespace) -> None:
    detector = CopyMoveDetector()
    for megapixels in args.megapixels:
        rgb = big_photo(megapixels, args.seed)
        detector.analyse(rgb)  # warm-up: OpenCV's first call allocates its thread pool
        start = time.perf_counter()
        evidence = detector.analyse(rgb)
        seconds = time.perf_counter() - start
        pixels = rgb.shape[0] * rgb.shape[1] / 1e6
        print(f"{rgb.shape[1]}x{rgb.shape[0]} ({pixels:.1f} MP): {seconds:.2f} s, "
              f"{seconds / pixels:.2f} s/MP, score {evidence.score:.3f}, "
              f"{len(evidence.pairs)} pairs")


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def memory(args: argparse.Namespace) -> None:
    """Peak resident memory while analysing, sampled every 5 ms, above what was held before."""
    rgb = big_photo(args.megapixels[0], args.seed)
    before, peak, done = resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], resident_bytes())
            time.sleep(0.005)

    thread = threading.Thread(target=sample)
    thread.start()
    start = time.perf_counter()
    evidence = CopyMoveDetector().analyse(rgb)
    seconds = time.perf_counter() - start
    done.set()
    thread.join()
    print(f"{rgb.shape[1]}x{rgb.shape[0]}: photo {rgb.nbytes / 2**20:.0f} MiB, map "
          f"{evidence.probability.nbytes / 2**20:.0f} MiB, resident before "
          f"{before / 2**20:.0f} MiB, peak while analysing {peak[0] / 2**20:.0f} MiB "
          f"(+{(peak[0] - before) / 2**20:.0f} MiB), {seconds:.1f} s, score "
          f"{evidence.score:.3f}, pairs {json.dumps([p.to_dict() for p in evidence.pairs])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=0, help="seed of every synthetic photo")
    commands = parser.add_subparsers(dest="command", required=True)
    sets = argparse.ArgumentParser(add_help=False, parents=[common])
    sets.add_argument("--noso", type=Path, default=REAL_VAL / "noso")
    sets.add_argument("--photos", type=Path, default=PHOTOS)
    sets.add_argument("--per-photo", type=int, default=2, help="synthetic copy-moves per photo")
    acc = commands.add_parser("accuracy", parents=[sets],
                              help="pixel AUC on NoSo and the synthetic set")
    acc.add_argument("--verbose", action="store_true", help="one line per image")
    acc.set_defaults(run=accuracy)
    big = commands.add_parser("larger", parents=[common],
                              help="pixel AUC and copies found in held-out photos at 1-4 MP")
    big.add_argument("--photos", type=Path, default=PHOTOS)
    big.add_argument("--verbose", action="store_true", help="one line per image")
    big.set_defaults(run=larger, seed=7)
    fused = commands.add_parser("verdict", parents=[sets],
                                help="the same sets through Localizer(): fused and each evidence")
    fused.add_argument("--model", default=None, help="model file (default: the shipped one)")
    fused.set_defaults(run=verdict)
    alarm = commands.add_parser("alarms", parents=[common],
                                help="scores on photos without copy-moves")
    alarm.add_argument("--data", type=Path, nargs="+",
                       default=[REAL_VAL / "authentic", REAL_VAL / "misd"])
    alarm.add_argument("--threshold", type=float, default=SCORE_THRESHOLD,
                       help="the decision threshold")
    alarm.set_defaults(run=alarms)
    point = commands.add_parser("operating-point", parents=[common],
                                help="the score threshold chosen on the training photos")
    point.add_argument("--photos", type=Path, default=PHOTOS)
    point.add_argument("--rate", type=float, default=0.005, help="share of photos allowed")
    point.add_argument("--resave-jpeg", type=int, nargs="*", default=[75])
    point.add_argument("--verbose", action="store_true", help="each photo scoring over 0.4")
    point.set_defaults(run=operating_point)
    for name, run, default in (("speed", speed, [1.0, 12.0]), ("memory", memory, [50.0])):
        command = commands.add_parser(name, parents=[common], help=f"{name} on big photos")
        command.add_argument("--megapixels", type=float, nargs="+", default=default)
        command.set_defaults(run=run)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
