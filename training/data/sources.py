"""Where synthetic forgeries get their pixels: the user's photos or photos shipped in packages.

Packaged photos (the files behind scikit-image ``skimage.data``, scikit-learn's
``load_sample_images`` and matplotlib's sample data) load offline, so a fresh install can
generate training data with no download.
Random crops, flips and scales turn a few dozen photos into thousands of distinct samples;
native views keep a photo's own pixels (its noise, demosaicing and JPEG grid) untouched.
"""

from __future__ import annotations

import functools
import importlib.util
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cflnet_sdk.errors import DataError
from cflnet_sdk.images import load_image
from cflnet_sdk.training.data.ops import resize_rgb

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
SPLITS = ("all", "train", "held-out")
HELD_OUT_SHARE = 10  # one photo in ten, chosen by file name, never feeds training
PHOTO_CACHE_BYTES = 512 * 2**20  # per process: the 422 MiB of photos a lent GPU trains on fit

# Natural photographs shipped inside installed packages: (name, package, file in the package).
# Found by path, not by importing the package: importing skimage.data, sklearn.datasets and
# matplotlib costs ~2.5 s, paid again by every worker process.
PACKAGED_PHOTOS = (
    *((f"skimage:{name}", "skimage", f"data/{file}") for name, file in (
        ("astronaut", "astronaut.png"), ("chelsea", "chelsea.png"), ("coffee", "coffee.png"),
        ("rocket", "rocket.jpg"), ("hubble_deep_field", "hubble_deep_field.jpg"),
        ("retina", "retina.jpg"), ("immunohistochemistry", "ihc.png"),
        ("stereo_motorcycle", "motorcycle_left.png"), ("camera", "camera.png"),
        ("brick", "brick.png"), ("grass", "grass.png"), ("gravel", "gravel.png"),
        ("coins", "coins.png"))),
    ("sklearn:china", "sklearn", "datasets/images/china.jpg"),
    ("sklearn:flower", "sklearn", "datasets/images/flower.jpg"),
    ("matplotlib:grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def _package_folder(package: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.lru_cache(maxsize=1)
def packaged_photos() -> dict[str, Path]:
    """Name -> file of every packaged photo installed here, in a fixed order."""
    found = {}
    for name, package, relative in PACKAGED_PHOTOS:
        folder = _package_folder(package)
        if folder is not None and (folder / relative).is_file():
            found[name] = folder / relative
    return found


@dataclass(frozen=True)
class PhotoSource:
    """An ordered, deterministic list of photos; each loads once per process and is cached.

    ``folders`` empty means the packaged photos. The order is sorted, so a seed gives the same
    photo for an index on every machine and in every worker process. ``split`` keeps all
    photos, or only those of the training or the held-out part (:func:`in_held_out`), so a
    held-out synthetic set shows photos that training never saw. ``exclude`` leaves out photos
    by name (``folder/file``, matched at the end of the path, as :func:`listed_photos` reads
    them): photos kept for validation by their own list, whatever their split.
    """

    folders: tuple[str, ...] = ()
    split: str = "all"
    exclude: tuple[str, ...] = ()

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        if self.split not in SPLITS:
            raise DataError(f"unknown photo split {self.split!r}; choose {', '.join(SPLITS)}")
        names = tuple(n for n in self._all_names() if not is_listed(n, self.exclude))
        if self.split != "all":
            names = tuple(n for n in names if in_held_out(n) == (self.split == "held-out"))
        if not names:
            raise DataError(f"no photos left in the {self.split!r} split of "
                            f"{', '.join(self.folders) or 'the packaged photos'}"
                            f"{' less the excluded ones' if self.exclude else ''}; add photos")
        return names

    def _all_names(self) -> tuple[str, ...]:
        if not self.folders:
            names = tuple(packaged_photos())
            if not names:
                raise DataError("no packaged photos to synthesise from: install one of "
                                "`pip install scikit-image` or `pip install scikit-learn`, "
                                "or pass --sources DIR with your own photos")
            return names
        found: list[str] = []
        for folder in self.folders:
            root = Path(folder)
            if not root.is_dir():
                raise DataError("source folder does not exist; pass a folder of photos", root)
            found += [str(p) for p in root.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES]
        if not found:
            raise DataError(f"no photos ({', '.join(PHOTO_SUFFIXES)}) found in "
                            f"{', '.join(self.folders)}; point --sources at folders of photos")
        return tuple(sorted(found))

    def __len__(self) -> int:
        return len(self.names)

    def photo(self, index: int) -> np.ndarray:
        """The ``index``-th photo as HxWx3 uint8 RGB."""
        return _PHOTOS.get(self.names[index])


class PhotoCache:
    """Decoded photos kept within a byte budget, least recently used out first (per process).

    Every sample decodes one or two whole photos; a camera original takes ~0.1 s to decode, more
    than the rest of the sample, so each loader worker keeps what fits in ``budget`` bytes.
    """

    def __init__(self, budget: int) -> None:
        self.budget, self.used = budget, 0
        self._photos: OrderedDict[str, np.ndarray] = OrderedDict()

    def get(self, name: str) -> np.ndarray:
        if name in self._photos:
            self._photos.move_to_end(name)
            return self._photos[name]
        rgb = load_image(packaged_photos().get(name, Path(name)))
        rgb.setflags(write=False)  # cached and shared: nobody may edit it in place
        self._photos[name], self.used = rgb, self.used + rgb.nbytes
        while self.used > self.budget and len(self._photos) > 1:
            _, oldest = self._photos.popitem(last=False)
            self.used -= oldest.nbytes
        return rgb


_PHOTOS = PhotoCache(PHOTO_CACHE_BYTES)


def listed_photos(path: str | Path) -> tuple[str, ...]:
    """The photos a list file names (``folder/file`` per line; ``#`` comments and blank lines
    skipped), e.g. ``docs/unedited-validation-photos.txt``."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DataError(f"cannot read the photo list ({exc.strerror}); pass a text file with "
                        "one folder/file name per line", path) from exc
    names = (line.strip() for line in lines)
    return tuple(name for name in names if name and not name.startswith("#"))


def is_listed(name: str, listed: Sequence[str]) -> bool:
    """Whether the photo at path ``name`` is one of ``listed`` (``folder/file`` names, matched
    at the end of the path, so the list holds wherever the photo folder is)."""
    path = "/" + Path(name).as_posix()
    return any(path.endswith("/" + entry.strip("/")) for entry in listed)


def in_held_out(name: str) -> bool:
    """Whether a photo belongs to the held-out part: a fixed function of its file name."""
    return zlib.crc32(Path(name).name.encode()) % HELD_OUT_SHARE == 0


def aligned_corner(rng: np.random.Generator, shape: Sequence[int], height: int, width: int,
                   align: int) -> tuple[int, int]:
    """A random top-left corner on multiples of ``align`` for a ``height x width`` crop."""
    top = align * int(rng.integers(0, max(0, shape[0] - height) // align + 1))
    left = align * int(rng.integers(0, max(0, shape[1] - width) // align + 1))
    return top, left


def crop_or_pad(array: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """``array[top:top+height, left:left+width]``, padded by reflection where it runs out."""
    crop = array[top:top + height, left:left + width]
    missing = ((0, height - crop.shape[0]), (0, width - crop.shape[1]))
    if any(after for _, after in missing):
        crop = np.pad(crop, missing + ((0, 0),) * (crop.ndim - 2), mode="symmetric")
    return crop


def native_view(photo: np.ndarray, rng: np.random.Generator, height: int, width: int,
                align: int = 16) -> np.ndarray:
    """A ``height x width`` crop of the photo's own pixels, never resampled.

    The crop starts on a multiple of ``align`` so the photo's JPEG grid (8x8 blocks, 16x16
    with chroma subsampling) stays where it was; photos smaller than the crop are padded by
    reflection. A random horizontal flip keeps the grid when ``width`` is a multiple of 8.
    """
    view = crop_or_pad(photo, *aligned_corner(rng, photo.shape, height, width, align),
                       height, width)
    if rng.random() < 0.5:
        view = view[:, ::-1]
    return np.ascontiguousarray(view)


def random_view(photo: np.ndarray, rng: np.random.Generator, height: int, width: int,
                scale_range: Sequence[float] = (0.6, 1.4)) -> np.ndarray:
    """A random crop of ``photo``, randomly scaled and flipped, resized to ``height x width``."""
    src_h, src_w = photo.shape[:2]
    # The crop covers height/scale x width/scale source pixels, limited by the photo's size.
    fit = min(src_h / height, src_w / width)
    scale = rng.uniform(*scale_range)
    crop_factor = min(1.0 / scale, fit)
    crop_h, crop_w = max(8, round(height * crop_factor)), max(8, round(width * crop_factor))
    crop_h, crop_w = min(crop_h, src_h), min(crop_w, src_w)
    top = int(rng.integers(0, src_h - crop_h + 1))
    left = int(rng.integers(0, src_w - crop_w + 1))
    view = photo[top:top + crop_h, left:left + crop_w]
    if rng.random() < 0.5:
        view = view[:, ::-1]
    return np.ascontiguousarray(resize_rgb(np.ascontiguousarray(view), height, width))
