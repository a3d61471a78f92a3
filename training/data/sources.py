"""Where synthetic forgeries get their pixels: the user's photos or photos shipped in packages.

Packaged photos (scikit-image ``skimage.data``, scikit-learn sample images, matplotlib's
sample data) load offline, so a fresh install can generate training data with no download.
Random crops, flips and scales turn a few dozen photos into thousands of distinct samples.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cflnet_sdk.training.data.ops import resize_rgb

from cflnet_sdk.errors import DataError
from cflnet_sdk.images import load_image

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")

# Natural photographs in skimage.data that ship inside the wheel (no pooch download needed).
SKIMAGE_PHOTOS = (
    "astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina",
    "immunohistochemistry", "stereo_motorcycle", "camera", "brick", "grass", "gravel",
    "coins", "moon", "cell",
)


def _skimage_photos() -> dict[str, Callable[[], np.ndarray]]:
    try:
        from skimage import data
    except ImportError:
        return {}

    def loader(name: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            image = getattr(data, name)()
            return image[0] if isinstance(image, tuple) else image  # stereo pair: left view
        return load

    return {f"skimage:{name}": loader(name) for name in SKIMAGE_PHOTOS if hasattr(data, name)}


def _sklearn_photos() -> dict[str, Callable[[], np.ndarray]]:
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:
        return {}
    return {f"sklearn:{name}": functools.partial(load_sample_image, f"{name}.jpg")
            for name in ("china", "flower")}


def _matplotlib_photos() -> dict[str, Callable[[], np.ndarray]]:
    try:
        from matplotlib import cbook
    except ImportError:
        return {}

    def grace_hopper() -> np.ndarray:
        with cbook.get_sample_data("grace_hopper.jpg") as handle:
            return load_image(Path(handle.name))

    return {"matplotlib:grace_hopper": grace_hopper}


def packaged_photo_loaders() -> dict[str, Callable[[], np.ndarray]]:
    """Name -> loader of every packaged photo available here, in a fixed order."""
    loaders: dict[str, Callable[[], np.ndarray]] = {}
    for provider in (_skimage_photos, _sklearn_photos, _matplotlib_photos):
        loaders.update(provider())
    return loaders


@dataclass(frozen=True)
class PhotoSource:
    """An ordered, deterministic list of photos; each loads once per process and is cached.

    ``folders`` empty means the packaged photos. The order is sorted, so a seed gives the same
    photo for an index on every machine and in every worker process.
    """

    folders: tuple[str, ...] = ()

    @functools.cached_property
    def names(self) -> tuple[str, ...]:
        if not self.folders:
            names = tuple(packaged_photo_loaders())
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
        return _load_photo(self.names[index])


@functools.lru_cache(maxsize=64)
def _load_photo(name: str) -> np.ndarray:
    loaders = {} if Path(name).is_file() else packaged_photo_loaders()
    rgb = load_image(loaders[name]() if name in loaders else Path(name))
    rgb.setflags(write=False)  # cached and shared: nobody may edit it in place
    return rgb


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
