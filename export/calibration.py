"""INT8 calibration inputs: real photos only, preprocessed exactly as the runtime will.

Static INT8 takes each layer's range from what the calibration inputs make it output. A binary
mask, or any file that is not a photo, would set ranges no real input produces, and a dataset
folder keeps its masks right beside its images; so files are screened by name (a ``masks``/``gt``
folder, a ``_mask``/``_gt`` name) and by content (two pixel values), and every file passed over
is reported with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import CFLNetError, ConfigError, DataError
from cflnet_sdk.training.data.readers import IMAGE_SUFFIXES

# A tile-mode model is calibrated on several tiles per photo, spread over it: the centre tile
# alone would never show the calibrator a photo's edges, sky or corners (docs/export.md).
TILES_PER_PHOTO = 4
MASK_FOLDERS = {"mask", "masks", "gt", "groundtruth", "ground_truth", "ground-truth"}
MASK_NAME = re.compile(r"(^|[_\-. ])(mask|gt)($|[_\-. ])", re.IGNORECASE)

Skipped = tuple[Path, str]  # a file passed over, and why


def mask_reason(path: Path, root: Path) -> str | None:
    """Why ``path`` is a mask by its name or folder, or None."""
    folders = [part.lower() for part in path.relative_to(root).parts[:-1]]
    if found := next((f for f in folders if f in MASK_FOLDERS), None):
        return f"a mask (in a '{found}' folder)"
    if MASK_NAME.search(path.stem):
        return "a mask (by its name)"
    return None


def two_valued(rgb: np.ndarray) -> bool:
    """True for a grey image with at most two pixel values: a mask, never a photo."""
    grey = rgb[..., 0]
    if not (np.array_equal(grey, rgb[..., 1]) and np.array_equal(grey, rgb[..., 2])):
        return False
    return np.count_nonzero(np.bincount(grey.ravel(), minlength=256)) <= 2


def spread(count: int, total: int) -> list[int]:
    """All ``total`` indices, ``count`` evenly spaced ones first: a pick that covers every
    subfolder of a sorted listing, and the rest in order to stand in for rejected files."""
    first = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int)).tolist()
    chosen = set(first)
    return first + [i for i in range(total) if i not in chosen]


class PhotoFolder:
    """The real photos of a folder (searched recursively); ``skipped`` lists what is not."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError("calibration folder does not exist; pass a folder of photos",
                            self.folder)
        self.candidates: list[Path] = []
        self.skipped: list[Skipped] = []
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                self.skipped.append((path, "not an image file"))
            elif reason := mask_reason(path, self.folder):
                self.skipped.append((path, reason))
            else:
                self.candidates.append(path)
        if not self.candidates:
            raise DataError(f"no photos ({', '.join(IMAGE_SUFFIXES)}, masks left out) in the "
                            "calibration folder; pass a folder of real photos", self.folder)

    def photos(self, count: int) -> Iterator[tuple[Path, np.ndarray]]:
        """Up to ``count`` decoded photos spread over the folder, each ``(path, HxWx3 RGB)``;
        unreadable and two-valued files are added to ``skipped`` and replaced by others."""
        from cflnet_sdk.images import load_image

        found = 0
        for index in spread(count, len(self.candidates)):
            if found == count:
                return
            path = self.candidates[index]
            try:
                rgb = load_image(path)
            except CFLNetError as exc:
                self.skipped.append((path, f"unreadable ({exc})"))
                continue
            if two_valued(rgb):
                self.skipped.append((path, "a mask (two pixel values only)"))
                continue
            found += 1
            yield path, rgb


def synthetic_images(count: int, contract: Contract, seed: int = 1) -> Iterator[np.ndarray]:
    """Real packaged photos with synthetic manipulations (training/data/synth.py)."""
    from cflnet_sdk.training.data.synth import SynthConfig, SynthDataset

    config = SynthConfig(seed=seed, height=contract.height, width=contract.width)
    return (sample.image for sample in SynthDataset(config, length=count))


def model_inputs(rgb: np.ndarray, contract: Contract, tiles: int) -> list[np.ndarray]:
    """(1, C, H, W) inputs of one photo as the runtime makes them: the resized photo, or
    ``tiles`` of its tiles at its own pixels (evenly spaced over the grid; one: the centre)."""
    from cflnet_sdk.tiling import TiledImage

    if contract.mode == "resize":
        return [contract.preprocess(rgb)[None]]
    image = TiledImage(rgb, contract)
    picks = np.linspace(0, len(image) - 1, tiles + 2)[1:-1].round().astype(int)
    return [image.input(int(index))[None] for index in np.unique(picks)]


@dataclass
class Calibration:
    """Model inputs for the calibrator, the photos they came from and the files passed over."""

    inputs: list[np.ndarray]
    photos: list[Path] = field(default_factory=list)  # empty: packaged photos, synthetic edits
    skipped: list[Skipped] = field(default_factory=list)

    def lines(self, limit: int = 20) -> list[str]:
        """What was used and every file skipped (the first ``limit``, then a count)."""
        source = (f"{len(self.photos)} photos" if self.photos
                  else "packaged photos with synthetic edits")
        lines = [f"INT8 calibration: {len(self.inputs)} inputs from {source}"]
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)} files that are not real photos:")
            lines += [f"  {path}: {why}" for path, why in self.skipped[:limit]]
            if len(self.skipped) > limit:
                lines.append(f"  ... and {len(self.skipped) - limit} more")
        return lines


def collect_calibration(contract: Contract, folder: str | Path | None = None, count: int = 64,
                        tiles: int = TILES_PER_PHOTO) -> Calibration:
    """Inputs from ``count`` real photos of ``folder``, preprocessed as at run time.

    Without a folder: packaged photos with synthetic edits (usable; the photos the model will
    really see calibrate better). ``tiles`` applies to tile-mode models only.
    """
    if count < 1 or tiles < 1:
        raise ConfigError(f"--calib-count {count} and tiles per photo {tiles} must be at least 1")
    if folder is None:
        images = synthetic_images(count, contract)
        return Calibration([x for rgb in images for x in model_inputs(rgb, contract, tiles)])
    source = PhotoFolder(folder)
    calibration = Calibration([], skipped=source.skipped)
    for path, rgb in source.photos(count):
        calibration.photos.append(path)
        calibration.inputs += model_inputs(rgb, contract, tiles)
    if not calibration.photos:
        raise DataError("none of the images in the calibration folder is a readable photo; "
                        "pass a folder of real photos", folder)
    return calibration
