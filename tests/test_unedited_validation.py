"""``scripts/unedited_validation.py``: the manifest of photos training never sees (issue 23).

Run as a user runs it, in a subprocess: held-out and listed photos become ``"mask": null`` rows
with their kind, training photos stay out, and an empty or wrong ``--photos`` is refused before
anything is written (``Path("")`` is the working directory, which it once scanned).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from cflnet_sdk.training.data.sources import in_held_out

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "unedited_validation.py"


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def photo_folder(root: Path) -> tuple[list[str], list[str]]:
    """A listed Kodak scan, web JPEGs in and out of the held-out split; the names each way."""
    pixels = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    (root / "kodak24").mkdir(parents=True)
    (root / "web").mkdir()
    Image.fromarray(pixels).save(root / "kodak24" / "kodim17.png")
    names = [f"web_{i:03d}.jpg" for i in range(40)]
    for name in names:
        Image.fromarray(pixels).save(root / "web" / name, quality=90)
    held_out = ["kodim17.png", *(n for n in names if in_held_out(n))]
    return held_out, [n for n in names if not in_held_out(n)]


def test_manifest_holds_the_held_out_and_listed_photos_only(tmp_path):
    held_out, training = photo_folder(tmp_path / "photos")
    assert training and len(held_out) > 1
    done = run("--photos", "photos", "-o", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").open()]
    assert sorted(Path(row["image"]).name for row in rows) == sorted(held_out)
    assert all(row["mask"] is None for row in rows)
    kinds = {Path(row["image"]).name: row["kind"] for row in rows}
    assert kinds.pop("kodim17.png") == "lossless"
    assert set(kinds.values()) == {"web JPEG"}
    assert all((tmp_path / "out" / row["image"]).is_file() for row in rows)


def test_empty_or_photo_less_folder_is_refused_and_nothing_written(tmp_path):
    photo_folder(tmp_path / "photos")
    for photos in ("", "missing", "out-of-photos"):
        (tmp_path / "out-of-photos").mkdir(exist_ok=True)
        done = run("--photos", photos, "-o", "out", cwd=tmp_path)
        assert done.returncode == 2
        assert "pass ../shared/photos" in done.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "manifest.jsonl").exists()
