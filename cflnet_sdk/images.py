"""Decode whatever a user calls an image into one form: an HxWx3 uint8 RGB array.

EXIF orientation is applied, every Pillow mode (gray, RGBA, palette, CMYK, 16-bit) converted,
and decompression bombs refused, so the model always sees the picture a person sees. Decoding
is safe from many threads at once (no global warning filters) and copies pixels only once
for the common 8-bit RGB file. Phone photos saved as HEIC/HEIF are read through pillow-heif
(the ``heif`` extra), registered with Pillow the first time such a file is met; JPEG 2000
comes with Pillow.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cflnet_sdk.errors import ImageError

ImageInput = str | os.PathLike | Image.Image | np.ndarray | bytes

_ORIENTATION = 0x0112  # EXIF tag
MAX_PIXELS = 100_000_000  # 10k x 10k; larger is almost surely a bomb or a mistake
# What `cflnet predict FOLDER` picks up: every format load_image reads.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp",
                            ".gif", ".heic", ".heif", ".jp2", ".j2k", ".jpx"})
# ISO base media file brands of HEIF still images (the 4 bytes after "ftyp").
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1",
                          b"msf1"})


def load_image(source: ImageInput) -> np.ndarray:
    """Return ``source`` as a contiguous HxWx3 uint8 RGB array, or raise ``ImageError``."""
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        return _from_pil(source, name="<PIL.Image>")
    if isinstance(source, (str, os.PathLike)):
        return _from_file(Path(source))
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _from_bytes(bytes(source))
    raise ImageError(f"unsupported image type {type(source).__name__}; pass a file path, "
                     "encoded file bytes, a PIL.Image or an HxWx3 uint8 RGB numpy array")


def _from_file(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImageError("no such image file; check the path", path)
    if path.stat().st_size == 0:
        raise ImageError("the file is empty (0 bytes); re-copy or re-export the image", path)
    return _decode(path, str(path))


def _from_bytes(data: bytes) -> np.ndarray:
    """Encoded file contents (JPEG, PNG ...) as a client sends them to a server."""
    if not data:
        raise ImageError("the image bytes are empty; send the contents of an image file")
    return _decode(io.BytesIO(data), "<image bytes>")


def _decode(source: Path | io.BytesIO, name: str) -> np.ndarray:
    path = name if isinstance(source, Path) else None  # bytes: no file to name in errors
    if _is_heif(source) and not _heif_registered():
        raise ImageError("this is a HEIC/HEIF photo and reading it needs pillow-heif: "
                         "pip install 'cflnet-sdk[heif]'", path)
    try:
        # Pillow refuses files over 2x its own limit here; _from_pil applies MAX_PIXELS to the
        # header's size before any pixel is decoded. (No warnings.catch_warnings: it changes
        # process-wide state and is not thread-safe, and files are decoded in a thread pool.)
        with Image.open(source) as image:
            return _from_pil(image, name=name)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"refused: the image is too large to decode safely ({exc}); "
                         "downscale it first", path) from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not an image file Pillow can read (JPEG, PNG, TIFF, WebP, BMP ...)",
                         path) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image is truncated or corrupt ({exc}); re-export it",
                         path) from exc


def _is_heif(source: Path | BinaryIO) -> bool:
    """Whether the file starts like a HEIF still image (an ISO "ftyp" box of a HEIF brand)."""
    if isinstance(source, Path):
        with source.open("rb") as file:
            head = file.read(12)
    else:
        head = source.read(12)
        source.seek(0)
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


@functools.cache
def _heif_registered() -> bool:
    """Register pillow-heif's HEIF opener with Pillow once; False when it is not installed."""
    if importlib.util.find_spec("pillow_heif") is None:
        return False
    import pillow_heif

    pillow_heif.register_heif_opener()
    return True


def _from_pil(image: Image.Image, name: str) -> np.ndarray:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageError(f"refused: {width}x{height} pixels exceeds the limit of {MAX_PIXELS}; "
                         "downscale it first", name)
    if image.getexif().get(_ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit gray: scale the full range to 8 bits instead of clipping at 255.
        data = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or data.max() > 255 else 255.0
        gray = np.clip(np.rint(data * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if image.mode == "F":
        gray = np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = _flatten_alpha(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image))


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """Composite transparent pixels on white, as viewers show them."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba)


def _from_array(array: np.ndarray) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageError(f"array of shape {array.shape} is not an image; "
                         "pass HxWx3 RGB (or HxW gray)")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageError(f"array of shape {array.shape} has no pixels")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.min() >= 0.0 and array.max() <= 1.0:
            array = np.rint(array * 255.0)
        elif array.min() < 0 or array.max() > 255:
            raise ImageError(f"{array.dtype} array with values outside [0, 255]; "
                             "pass uint8 RGB or floats in [0, 1]")
        array = array.astype(np.uint8)
    if array.shape[0] * array.shape[1] > MAX_PIXELS:
        raise ImageError(f"refused: {array.shape[1]}x{array.shape[0]} pixels exceeds the limit")
    return np.ascontiguousarray(array)
