"""Exporting tile-mode models: ONNX, engine profiles and headers, Triton, parity checks."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import ConfigError
from tests.test_export_cli import cflnet_export

pytest.importorskip("polygraphy", reason="the check command compares with polygraphy")


@pytest.fixture(scope="module")
def ela_onnx(ela_checkpoint, tmp_path_factory):
    from cflnet_sdk.export.onnx import export_onnx

    return export_onnx(ela_checkpoint, tmp_path_factory.mktemp("ela-onnx") / "ela.onnx")


def test_onnx_command_writes_the_mode_and_verifies_tile_maps(tile_checkpoint, tiny_checkpoint,
                                                              tmp_path):
    from cflnet_sdk.export.onnx import read_metadata

    result = cflnet_export("onnx", tile_checkpoint, "-o", tmp_path / "tile.onnx")
    assert result.returncode == 0, result.stderr
    assert "tile mode, real photos 31x47, 333x500, 601x799 (3 images)" in result.stdout
    assert "FAILED" not in result.stdout
    result = cflnet_export("onnx", tiny_checkpoint, "-o", tmp_path / "tiny.onnx", "--mode",
                           "tile", "--no-verify")
    assert result.returncode == 0, result.stderr
    contract = Contract.from_json(read_metadata(tmp_path / "tiny.onnx")["cflnet.contract"])
    assert (contract.mode, contract.size, contract.tile_overlap) == ("tile", (64, 64), 16)


def test_tile_mode_refuses_a_dynamic_shape(tile_checkpoint, tmp_path):
    from cflnet_sdk.export.onnx import build_onnx

    with pytest.raises(ConfigError, match="without --dynamic-shape"):
        build_onnx(tile_checkpoint, dynamic_shape=True)


def test_check_compares_tile_mode_maps_of_odd_sized_photos(tile_onnx, tile_checkpoint):
    result = cflnet_export("check", tile_onnx, "--reference", tile_checkpoint, "--count", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    line = next(x for x in result.stdout.splitlines() if "tile mode, real photos" in x)
    error = float(re.search(r"max abs error (\S+),", line).group(1))
    assert error <= 1e-4 and "FAILED" not in line


def test_engine_profile_and_header_carry_tile_mode(tile_onnx, ela_onnx):
    from cflnet_sdk.engine_file import engine_contract
    from cflnet_sdk.export.tensorrt import (
        BuildOptions,
        engine_header,
        parse_shape,
        profile_shapes,
        read_onnx_summary,
        typing_plan,
    )

    summary = read_onnx_summary(tile_onnx)
    assert profile_shapes(summary, BuildOptions()) == (
        (1, 3, 128, 128), (16, 3, 128, 128), (16, 3, 128, 128))  # a 12 MP photo: 1302 tiles
    wide = BuildOptions(max_shape=parse_shape("64x3x128x128"))
    assert profile_shapes(summary, wide)[1] == (64, 3, 128, 128)
    ela = read_onnx_summary(ela_onnx)
    assert profile_shapes(ela, BuildOptions())[2] == (16, 4, 128, 128)
    with pytest.raises(ConfigError, match="fixed dimension 1 = 4"):
        profile_shapes(ela, BuildOptions(max_shape=parse_shape("8x3x128x128")))
    options = BuildOptions()
    header = engine_header(ela, typing_plan(10, "fp32", options), profile_shapes(ela, options),
                           options, "10.3.0", ("Orin", "8.7"))
    contract = engine_contract(json.loads(json.dumps(header)))
    assert (contract.mode, contract.channels) == ("tile", 4)


def test_triton_config_carries_the_mode_and_channels(ela_onnx, tmp_path):
    from cflnet_sdk.export.triton import TritonOptions, write_triton_repository

    text = (write_triton_repository(ela_onnx, tmp_path, TritonOptions(kind="cpu"))
            / "config.pbtxt").read_text()
    assert "dims: [ 4, 128, 128 ]" in text and "dims: [ 1, 128, 128 ]" in text
    value = re.search(r'key: "cflnet.contract"\s+value: \{ string_value: (".*") \}', text)
    contract = Contract.from_json(json.loads(value.group(1)))
    assert (contract.mode, contract.ela_qualities) == ("tile", (90,))


def test_tile_mode_int8_calibrates_on_tiles_of_the_images_own_pixels(photo_files):
    from cflnet_sdk.export.calibration import collect_calibration
    from cflnet_sdk.images import load_image
    from cflnet_sdk.tiling import TiledImage

    contract = Contract(height=128, width=128, mode="tile", ela_qualities=(90,))
    centre = collect_calibration(contract, photo_files["jpeg"].parent, count=2, tiles=1)
    assert len(centre.inputs) == 2 and centre.inputs[0].shape == (1, 4, 128, 128)
    image = TiledImage(load_image(photo_files["jpeg"]), contract)  # 512x512: a 5x5 grid
    assert any(np.array_equal(x[0], image.input(len(image) // 2)) for x in centre.inputs)
    spread = collect_calibration(contract, photo_files["jpeg"].parent, count=1, tiles=4)
    assert centre.photos[0] == spread.photos[0] == photo_files["jpeg"]
    tiles = [next(i for i in range(len(image)) if np.array_equal(x[0], image.input(i)))
             for x in spread.inputs]
    assert tiles == [5, 10, 14, 19]  # evenly spaced over the grid, edges and middle
