"""Tile mode without a network: the grid, the mirroring, the blending weights, the memory bound."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from cflnet_sdk import Localizer
from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import ConfigError
from cflnet_sdk.tiling import (
    TiledImage,
    TileGrid,
    blend_profile,
    downscaled_size,
    reflect,
    tile_count,
    typical_tile_count,
)
from tests.conftest import photo_array

SIZES = [(1, 1), (31, 47), (128, 128), (500, 333), (1536, 1024), (3000, 2000)]
TILE = Contract(height=128, width=128, mode="tile", tile_overlap=32)


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("contract", [TILE, Contract(height=64, width=96, mode="tile",
                                                     tile_overlap=24)], ids=["128", "64x96"])
def test_weights_cover_every_pixel_and_sum_to_one(height, width, contract):
    grid = TileGrid.for_contract(height, width, contract)
    assert all(y % 8 == 0 for y in grid.ys) and all(x % 8 == 0 for x in grid.xs)
    assert grid.ys[-1] + contract.height >= height and grid.xs[-1] + contract.width >= width
    assert grid.ys[-1] < max(height, 1) and grid.xs[-1] < max(width, 1)  # no idle tile
    total = np.zeros((height, width), np.float32)
    for index in range(len(grid)):
        assert grid.weights(index).min() >= 0.0
        grid.blend(total, index, np.ones(contract.size, np.float32))
    assert np.abs(total - 1.0).max() <= 1e-6


def test_one_dimensional_ramps_are_complementary_and_flat_at_the_grid_edges():
    rise = blend_profile(128, 32, first=False, last=True)[:32]
    fall = blend_profile(128, 32, first=True, last=False)[-32:]
    np.testing.assert_allclose(rise + fall, 1.0, atol=1e-12)
    assert np.all(np.diff(rise) > 0) and rise[0] < 0.01 and rise[-1] > 0.99
    assert np.all(blend_profile(128, 32, first=True, last=True) == 1.0)
    assert np.all(blend_profile(128, 0, first=False, last=False) == 1.0)


@pytest.mark.parametrize("length", [1, 2, 5, 31, 128, 333])
def test_reflect_is_numpys_reflect_padding(length):
    indices = np.arange(length + 300)
    expected = (np.zeros_like(indices) if length == 1 else
                np.pad(np.arange(length), (0, 300), mode="reflect"))
    np.testing.assert_array_equal(reflect(indices, length), expected)


@pytest.mark.parametrize(("height", "width"), [(1, 1), (31, 47), (100, 77), (300, 451)])
def test_tiles_are_the_images_own_pixels_mirrored_past_the_edge(height, width):
    pixels = photo_array("chelsea")[:height, :width]
    grid = TileGrid.for_contract(height, width, TILE)
    padded_height, padded_width = grid.ys[-1] + 128, grid.xs[-1] + 128
    padded = (np.broadcast_to(pixels, (padded_height, padded_width, 3)) if pixels.shape[:2] ==
              (1, 1) else np.pad(pixels, ((0, padded_height - height),
                                          (0, padded_width - width), (0, 0)), mode="reflect"))
    for index in range(len(grid)):
        row, column = grid.position(index)
        y, x = grid.ys[row], grid.xs[column]
        np.testing.assert_array_equal(grid.cut(pixels, index), padded[y:y + 128, x:x + 128])


def test_tile_inputs_are_the_contract_normalisation_of_tiles_of_the_whole_images_channels():
    rgb = photo_array("coffee")[:200, :300]
    contract = Contract(height=64, width=64, mode="tile", tile_overlap=16, ela_qualities=(90,))
    image = TiledImage(rgb, contract)
    whole = contract.input_pixels(rgb)  # error levels computed on the whole image
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (200, 300, 4)
    for index in (0, len(image) // 2, len(image) - 1):
        tile = image.input(index)
        assert tile.shape == (4, 64, 64) and tile.dtype == np.float32
        np.testing.assert_array_equal(tile, contract.normalize(image.grid.cut(whole, index)))


def test_max_pixels_downscales_before_tiling_and_restores_the_size():
    assert downscaled_size(3000, 4000, 0) == (3000, 4000)
    assert downscaled_size(3000, 4000, 12_000_000) == (3000, 4000)
    height, width = downscaled_size(3000, 4000, 1_000_000)
    assert height * width <= 1_000_000 and abs(width / height - 4 / 3) < 0.01
    contract = Contract(height=64, width=64, mode="tile", tile_overlap=16, max_pixels=40_000)
    image = TiledImage(photo_array("astronaut"), contract)  # 512x512 -> 200x200
    assert image.grid.height * image.grid.width <= 40_000
    assert len(image) == tile_count(512, 512, contract)
    for index in range(len(image)):
        image.add(index, np.full((64, 64), 0.25, np.float32))
    probability, score = image.result()
    assert probability.shape == (512, 512)
    np.testing.assert_allclose(probability, 0.25, atol=1e-6)
    assert score == pytest.approx(0.25, abs=1e-6)


def test_a_12_megapixel_photo_sizes_the_engine_batch():
    assert typical_tile_count(Contract(mode="tile")) == 16 * 21  # 256 tiles, stride 192
    assert typical_tile_count(TILE) == 31 * 42  # stride 96


class StubBackend:
    """A backend that answers 0.5 everywhere and records its batch sizes."""

    name, device, max_batch, thread_safe = "stub", "cpu", None, True

    def __init__(self, contract: Contract) -> None:
        self.contract = contract
        self.calls: list[int] = []

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.calls.append(len(batch))
        return np.full((len(batch), *batch.shape[2:]), 0.5, np.float32)


def stub_localizer(monkeypatch, contract: Contract, **options) -> Localizer:
    import cflnet_sdk.runtime.base

    monkeypatch.setattr(cflnet_sdk.runtime.base, "open_backend",
                        lambda path, backend, device, override: StubBackend(contract))
    return Localizer("stub.onnx", **options)


def test_tiles_of_several_images_share_calls_of_at_most_tile_batch(monkeypatch):
    contract = Contract(height=64, width=64, mode="tile", tile_overlap=16)
    localizer = stub_localizer(monkeypatch, contract, tile_batch=5)
    images = [np.zeros((31, 47, 3), np.uint8), np.zeros((100, 130, 3), np.uint8)]
    predictions = localizer.predict_batch(images, batch_size=2)
    assert [p.size for p in predictions] == [(31, 47), (100, 130)]
    assert max(localizer.backend.calls) == 5
    assert sum(localizer.backend.calls) == 1 + tile_count(100, 130, contract)
    with pytest.raises(ConfigError, match="tile_batch"):
        stub_localizer(monkeypatch, contract, tile_batch=0)


def test_memory_stays_below_one_full_size_float_input(monkeypatch):
    """A 12 MP photo: the float32 CxHxW input alone would be 144 MB; tile mode holds the uint8
    pixels, one float32 map and the image-score selection, plus one batch of tiles."""
    height, width = 3000, 4000
    localizer = stub_localizer(monkeypatch, Contract(mode="tile"))
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    tracemalloc.start()
    try:
        prediction = localizer.predict(rgb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert prediction.size == (height, width) and prediction.score == pytest.approx(0.5)
    full_float_input = 3 * height * width * 4
    assert peak < 0.75 * full_float_input, f"peak {peak / 2**20:.0f} MiB"
