"""Tile mode: the network sees the image's own pixels in fixed tiles, blended back seamlessly.

Resizing a photo to the model size erases the traces forensics relies on (sensor noise,
demosaicing, JPEG blocking); a fully convolutional CFL-Net can instead run on ``tile x tile``
windows of the photo at its own resolution. Tiles start on multiples of 8 (the stride
``tile - overlap`` is one), so each keeps the image's 8x8 JPEG grid; the grid is completed
on the right and bottom by mirroring (never by upscaling). Overlapping tiles are blended with
raised-cosine ramps whose weights sum to one at every pixel, so no seam shows and the map comes
back at exactly the image's size. numpy only: every backend runs the same tiles.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.prediction import image_score

# Most tiles sent to a backend in one call: bounds the batch memory whatever the photo's size
# (16 tiles of 256x256x3 float32 are 12.6 MB of input), and sizes engine profiles.
TILE_BATCH = 16
TYPICAL_PHOTO = (3000, 4000)  # 12 MP: its tile count is the batch an engine is tuned for


def axis_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: 0, stride, 2 * stride ... until ``length`` is covered."""
    stride = tile - overlap
    count = 1 if length <= tile else math.ceil((length - tile) / stride) + 1
    return [i * stride for i in range(count)]


def blend_profile(tile: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """1-D tile weights: 1 inside, ramps over the overlaps with the previous and next tile.

    The ramps are sin^2 and cos^2 of the same angle, so two neighbours' weights sum to one
    at every overlapping pixel and the blend is smooth (no kink). The grid's outer edges keep
    weight 1: no other tile covers them.
    """
    weights = np.ones(tile, dtype=np.float64)
    if overlap:
        rise = np.sin(np.pi / 2 * (np.arange(overlap) + 0.5) / overlap) ** 2
        if not first:
            weights[:overlap] = rise
        if not last:
            weights[-overlap:] = rise[::-1]
    return weights


def reflect(indices: np.ndarray, length: int) -> np.ndarray:
    """Indices past ``length`` mirrored back (numpy's "reflect" padding, repeated as needed)."""
    if length == 1:
        return np.zeros_like(indices)
    period = 2 * (length - 1)
    folded = indices % period
    return np.where(folded < length, folded, period - folded)


def downscaled_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """The size to tile at: unchanged, or shrunk (aspect kept) to at most ``max_pixels``."""
    if not max_pixels or height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    return max(1, math.floor(height * scale)), max(1, math.floor(width * scale))


@functools.lru_cache(maxsize=64)
def tile_weights(tile_height: int, tile_width: int, overlap: int, rows: tuple[bool, bool],
                 columns: tuple[bool, bool]) -> np.ndarray:
    """Read-only blending weights of a tile; ``rows`` and ``columns`` say whether it is first
    and last along each axis. Nine kinds of tile per grid, so they are computed once."""
    weights = np.outer(blend_profile(tile_height, overlap, *rows),
                       blend_profile(tile_width, overlap, *columns)).astype(np.float32)
    weights.flags.writeable = False
    return weights


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering a ``height x width`` image, numbered row by row."""

    height: int
    width: int
    tile_height: int
    tile_width: int
    overlap: int

    @classmethod
    def for_contract(cls, height: int, width: int, contract: Contract) -> TileGrid:
        return cls(height, width, contract.height, contract.width, contract.tile_overlap)

    @cached_property
    def ys(self) -> list[int]:
        return axis_origins(self.height, self.tile_height, self.overlap)

    @cached_property
    def xs(self) -> list[int]:
        return axis_origins(self.width, self.tile_width, self.overlap)

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def position(self, index: int) -> tuple[int, int]:
        """(row, column) of tile ``index`` in the grid."""
        return divmod(index, len(self.xs))

    def cut(self, pixels: np.ndarray, index: int) -> np.ndarray:
        """Tile ``index`` of HxWxC ``pixels``, mirrored where it reaches past the image (a view
        of ``pixels`` where it does not)."""
        row, column = self.position(index)
        y, x = self.ys[row], self.xs[column]
        if y + self.tile_height <= self.height and x + self.tile_width <= self.width:
            return pixels[y:y + self.tile_height, x:x + self.tile_width]
        rows = reflect(np.arange(y, y + self.tile_height), self.height)
        columns = reflect(np.arange(x, x + self.tile_width), self.width)
        return pixels[rows[:, None], columns[None, :]]

    def weights(self, index: int) -> np.ndarray:
        """Blending weights of tile ``index`` (tile-sized float32, shared: do not modify)."""
        row, column = self.position(index)
        return tile_weights(self.tile_height, self.tile_width, self.overlap,
                            (row == 0, row == len(self.ys) - 1),
                            (column == 0, column == len(self.xs) - 1))

    def blend(self, canvas: np.ndarray, index: int, probability: np.ndarray) -> None:
        """Add tile ``index``'s weighted probability to the HxW ``canvas`` (inside part only)."""
        row, column = self.position(index)
        y, x = self.ys[row], self.xs[column]
        h, w = min(self.tile_height, self.height - y), min(self.tile_width, self.width - x)
        canvas[y:y + h, x:x + w] += (self.weights(index) * probability)[:h, :w]


class TileCanvas:
    """Blends the probabilities of an image's tiles back into one map at the image's size.

    Needs only the image's size, so a server's post-processing step, which never sees the
    pixels, assembles exactly what ``Localizer`` does.
    """

    def __init__(self, size: tuple[int, int], contract: Contract) -> None:
        self.contract = contract
        self.size = size
        self.grid = TileGrid.for_contract(*downscaled_size(*size, contract.max_pixels),
                                          contract)
        self.canvas = np.zeros((self.grid.height, self.grid.width), dtype=np.float32)

    def __len__(self) -> int:
        return len(self.grid)

    def add(self, index: int, probability: np.ndarray) -> None:
        self.grid.blend(self.canvas, index, probability)

    def result(self) -> tuple[np.ndarray, float]:
        """(probability at the original size, image score of that full-size map)."""
        probability = np.clip(self.canvas, 0.0, 1.0, out=self.canvas)  # no full-size copy
        if probability.shape != self.size:  # max_pixels shrank the image: the only resampling
            probability = self.contract.restore_probability(probability, *self.size)
        return probability, image_score(probability)


class TiledImage(TileCanvas):
    """One image in tile mode: cuts its normalised tiles and blends their probabilities.

    The input channels (colour and error levels) are computed once on the whole image, then
    each tile is cut from that uint8 array and normalised on its own, so memory holds the
    image's uint8 channels and one float32 map, never a full-size float32 input.
    """

    def __init__(self, rgb: np.ndarray, contract: Contract) -> None:
        super().__init__(rgb.shape[:2], contract)
        pixels = contract.input_pixels(rgb)
        if pixels.shape[:2] != self.canvas.shape:
            pixels = contract.resize_to(pixels, *self.canvas.shape)
        self.pixels = pixels

    def input(self, index: int) -> np.ndarray:
        """CxHxW float32 model input of tile ``index``."""
        return self.contract.normalize(self.grid.cut(self.pixels, index))


def tile_count(height: int, width: int, contract: Contract) -> int:
    """How many tiles a ``height x width`` image takes under ``contract``."""
    return len(TileGrid.for_contract(*downscaled_size(height, width, contract.max_pixels),
                                     contract))


def typical_tile_count(contract: Contract) -> int:
    """Tiles of a 12 MP photo: the batch a tile-mode engine is tuned for, up to its maximum."""
    return tile_count(*TYPICAL_PHOTO, contract)
