"""Pack what a lent GPU machine needs to train and choose a model into one small folder.

The device machine reaches nothing outside and takes at most 64 MiB of working tree, so the data
travel with it: training-split photos, whole files in folder order then by name, until the byte
budget (their names unchanged, so the held-out split by file name stays the same there); a few
held-out photos for the synthetic validation; the selection set, the first pairs of a real
forgery set, re-encoded as lossless WebP (checked pixel for pixel) to fit; and, with
``--unedited``, the first photos of a set nobody edited, copied byte for byte, on which the
epoch choice measures image-level detection (false alarms depend on how a photo was stored).

    python scripts/pack_device_data.py --photos ../shared/photos --folders dresden,imagenet-sample \
        --exclude-photos docs/unedited-validation-photos.txt \
        --select ../shared/data/real-val/misd --select-count 120 \
        --unedited ../shared/data/real-val/authentic --unedited-count 133 --budget-mib 60 \
        -o .devdata
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from cflnet_sdk.training.data.sources import PhotoSource, in_held_out, listed_photos

MIB = 2**20


def lossless_webp(source: Path, target: Path) -> None:
    """Re-encode an image as lossless WebP and prove the pixels did not change."""
    with Image.open(source) as image:
        image.save(target, "WEBP", lossless=True, method=6)
        original = np.asarray(image.convert("RGB"))
    with Image.open(target) as copy:
        if not np.array_equal(np.asarray(copy.convert("RGB")), original):
            raise SystemExit(f"{source}: lossless WebP changed the pixels")


def manifest_rows(root: Path) -> list[dict]:
    """The rows of a manifest dataset's ``manifest.jsonl``, as written."""
    return [json.loads(line) for line in (root / "manifest.jsonl").read_text().splitlines()
            if line.strip()]


def write_manifest(out: Path, rows: list[dict]) -> int:
    """Write ``rows`` as ``out``'s manifest; the bytes of everything packed in ``out``."""
    (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sum(p.stat().st_size for p in out.rglob("*") if p.is_file())


def pack_selection(root: Path, count: int, out: Path) -> int:
    """The first ``count`` pairs of a manifest dataset, images as lossless WebP; bytes written."""
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    rows = []
    for line in manifest_rows(root)[:count]:
        image = out / "images" / (Path(line["image"]).stem + ".webp")
        lossless_webp(root / line["image"], image)
        mask = out / "masks" / Path(line["mask"]).name
        shutil.copyfile(root / line["mask"], mask)
        rows.append({**line, "image": str(image.relative_to(out)),
                     "mask": str(mask.relative_to(out))})
    return write_manifest(out, rows)


def pack_unedited(root: Path, count: int, out: Path) -> int:
    """The first ``count`` unedited photos (``"mask": null`` rows) of a manifest dataset, copied
    byte for byte; bytes written."""
    (out / "images").mkdir(parents=True)
    rows = []
    for line in [line for line in manifest_rows(root) if line["mask"] is None][:count]:
        image = out / "images" / Path(line["image"]).name
        shutil.copyfile(root / line["image"], image)
        rows.append({**line, "image": str(image.relative_to(out))})
    return write_manifest(out, rows)


def pack_photos(root: Path, folders: list[str], budget: int, held_out: int, out: Path,
                exclude: tuple[str, ...] = ()) -> list[Path]:
    """Held-out photos first (validation only), then training photos until ``budget`` bytes;
    never the ``exclude``d ones."""
    chosen: list[Path] = []
    photos = [Path(name) for f in folders
              for name in PhotoSource((str(root / f),), exclude=exclude).names]
    spare = [p for p in photos if in_held_out(p.name)][:held_out]
    training = [p for p in photos if not in_held_out(p.name)]
    used = 0
    for photo in spare + training:
        size = photo.stat().st_size
        if used + size > budget:
            continue
        target = out / photo.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(photo, target)
        chosen.append(photo.relative_to(root))
        used += size
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--folders", default="dresden,imagenet-sample",
                        help="photo folders in order of priority")
    parser.add_argument("--select", type=Path, required=True, help="manifest dataset")
    parser.add_argument("--select-count", type=int, default=120)
    parser.add_argument("--unedited", type=Path, help="manifest dataset of unedited photos")
    parser.add_argument("--unedited-count", type=int, default=133)
    parser.add_argument("--held-out", type=int, default=20, help="held-out photos for validation")
    parser.add_argument("--exclude-photos", type=Path,
                        help="photos never to pack, one folder/file per line (validation photos)")
    parser.add_argument("--budget-mib", type=float, default=60.0, help="for all of -o")
    parser.add_argument("-o", "--out", type=Path, required=True)
    args = parser.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    selected = pack_selection(args.select, args.select_count, args.out / "select")
    if args.unedited:
        selected += pack_unedited(args.unedited, args.unedited_count, args.out / "unedited")
    chosen = pack_photos(args.photos, args.folders.split(","),
                         int(args.budget_mib * MIB) - selected, args.held_out,
                         args.out / "photos",
                         listed_photos(args.exclude_photos) if args.exclude_photos else ())
    (args.out / "photos.txt").write_text("".join(f"{p}\n" for p in chosen))
    training = sum(not in_held_out(p.name) for p in chosen)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"{args.out}: {training} training + {len(chosen) - training} held-out photos, "
          f"{args.select_count} selection pairs"
          f"{f', {args.unedited_count} unedited photos' if args.unedited else ''}, "
          f"{total / MIB:.1f} MiB")


if __name__ == "__main__":
    main()
