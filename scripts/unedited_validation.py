"""Write the manifest of unedited validation photos taken from ../shared/photos (issue 23).

The photos training never sees: the crc32 held-out split (``sources.in_held_out``) and the
never-compressed film scans and full-size camera originals listed in
``docs/unedited-validation-photos.txt``. Rows have ``"mask": null`` and a kind that says how
the photo was stored, since false alarms depend on it: ``lossless``, ``camera original`` (a
JPEG of 4 megapixels or more) or ``web JPEG``.

    python scripts/unedited_validation.py --photos ../shared/photos -o out/unedited
    cflnet evaluate --data ../shared/data/real-val/misd --data out/unedited
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from PIL import Image

from cflnet_sdk.fileio import write_bytes_atomic
from cflnet_sdk.training.data.sources import PHOTO_SUFFIXES, in_held_out, is_listed, listed_photos

LISTED = Path(__file__).resolve().parent.parent / "docs" / "unedited-validation-photos.txt"
CAMERA_PIXELS = 4_000_000


def kind_of(photo: Path) -> str:
    """How the photo is stored: what its false alarms are reported under."""
    if photo.suffix.lower() not in (".jpg", ".jpeg"):
        return "lossless"
    with Image.open(photo) as image:
        width, height = image.size
    return "camera original" if width * height >= CAMERA_PIXELS else "web JPEG"


def rows(photos: Path, out: Path) -> list[dict]:
    listed = listed_photos(LISTED)
    found = sorted(p for p in photos.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    chosen = [p for p in found if in_held_out(p.name) or is_listed(str(p), listed)]
    return [{"image": os.path.relpath(p.resolve(), out.resolve()), "mask": None,
             "kind": kind_of(p)} for p in chosen]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", required=True, help="../shared/photos")
    parser.add_argument("-o", "--out", required=True, help="folder for manifest.jsonl")
    args = parser.parse_args()
    # Path("") is the working directory: an empty argument would scan it and write there.
    if not args.photos.strip() or not Path(args.photos).is_dir():
        parser.error(f"--photos {args.photos!r} is not a folder: pass ../shared/photos")
    if not args.out.strip():
        parser.error("-o is empty: pass the folder the manifest goes to")
    photos, out = Path(args.photos), Path(args.out)
    found = rows(photos, out)
    if not found:
        parser.error(f"no held-out photos under {photos}: pass ../shared/photos")
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "manifest.jsonl",
                       "".join(json.dumps(row) + "\n" for row in found).encode("utf-8"))
    kinds = {kind: sum(row["kind"] == kind for row in found) for kind in
             sorted({row["kind"] for row in found})}
    print(f"wrote {out / 'manifest.jsonl'}: {len(found)} unedited photos {kinds}")


if __name__ == "__main__":
    main()
