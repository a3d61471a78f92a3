"""Tile mode end to end with real models and files: sizes, seams, backends, batches, modes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk import Localizer, ModelFileError
from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import ConfigError
from cflnet_sdk.prediction import image_score
from cflnet_sdk.tiling import TileGrid, tile_count
from tests.conftest import photo_array
from tests.test_localizer import check_prediction, onnx_model
from tests.test_predict_cli import cflnet

SIZES = [(1, 1), (31, 47), (128, 128), (500, 333), (1536, 1024), (3000, 2000)]
TOLERANCE = 1e-4
# Mean step of the map across tile borders / mean step between other neighbouring pixels,
# measured on chelsea, coffee, astronaut, rocket: 0.45-0.63 blended, 76-103 with overlap 0.
SEAM_RATIO_BOUND = 1.0


def photo_of(height: int, width: int) -> np.ndarray:
    """A real photo at exactly ``height x width``: a crop, mirrored out where it is smaller."""
    photo = photo_array("astronaut")[:height, :width]
    pad = ((0, height - photo.shape[0]), (0, width - photo.shape[1]), (0, 0))
    return np.ascontiguousarray(np.pad(photo, pad, mode="symmetric"))


@pytest.fixture(scope="module")
def ort_tile(tile_onnx) -> Localizer:
    return Localizer(tile_onnx, device="cpu")


@pytest.fixture(scope="module")
def torch_tile(tile_checkpoint) -> Localizer:
    return Localizer(tile_checkpoint)


@pytest.fixture(scope="module")
def jpeg_333x500(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tile-photos") / "coffee-333x500.jpg"
    Image.fromarray(photo_array("coffee")[:333, :500]).save(path, quality=90)
    return path


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_maps_come_back_at_exactly_the_image_size(ort_tile, height, width):
    assert ort_tile.mode == "tile" and ort_tile.contract.size == (128, 128)
    check_prediction(ort_tile.predict(photo_of(height, width)), (height, width))


def test_torch_and_onnxruntime_agree_in_tile_mode(torch_tile, ort_tile, jpeg_333x500):
    for image in (photo_of(1, 1), photo_of(31, 47), photo_of(128, 128), jpeg_333x500):
        a, b = torch_tile.predict(image), ort_tile.predict(image)
        assert np.abs(a.probability - b.probability).max() <= TOLERANCE
        assert abs(a.score - b.score) <= TOLERANCE


@pytest.mark.parametrize("which", ["torch", "onnxruntime"])
def test_predict_batch_equals_predict(torch_tile, ort_tile, jpeg_333x500, which):
    localizer = torch_tile if which == "torch" else ort_tile
    images = [jpeg_333x500, photo_of(31, 47), photo_of(200, 301), photo_of(128, 128)]
    batch = localizer.predict_batch(images, batch_size=3)
    for image, together in zip(images, batch, strict=True):
        alone = localizer.predict(image)
        # tiles share calls with other images' tiles, which may change kernel summation order
        np.testing.assert_allclose(together.probability, alone.probability, rtol=0, atol=1e-6)
        assert together.score == pytest.approx(alone.score, abs=1e-6)


def seam_ratio(probability: np.ndarray, contract: Contract) -> float:
    """Mean |step| of the map across tile borders over the mean |step| elsewhere."""
    grid = TileGrid.for_contract(*probability.shape, contract)
    steps, borders = [], []
    for axis, starts, tile in ((1, grid.xs, contract.width), (0, grid.ys, contract.height)):
        step = np.abs(np.diff(probability, axis=axis))
        cuts = {s for s in starts[1:]} | {s + tile for s in starts[:-1]}
        at_border = np.zeros(step.shape[axis], bool)
        at_border[[c - 1 for c in cuts if 0 < c < probability.shape[axis]]] = True
        steps.append(np.moveaxis(step, axis, 0))
        borders.append(at_border)
    border = np.concatenate([s[b].ravel() for s, b in zip(steps, borders, strict=True)])
    inside = np.concatenate([s[~b].ravel() for s, b in zip(steps, borders, strict=True)])
    return float(border.mean() / inside.mean())


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_no_seam_shows_across_tile_borders(tile_onnx, ort_tile, name):
    rgb = photo_array(name)
    blended = seam_ratio(ort_tile.predict(rgb).probability, ort_tile.contract)
    assert blended <= SEAM_RATIO_BOUND
    hard = replace(ort_tile.contract, tile_overlap=0)  # the statistic does see seams
    assert seam_ratio(Localizer(tile_onnx, contract=hard).predict(rgb).probability, hard) > 10


# The fields a version-1 contract had (resize mode only), as the first releases wrote them.
VERSION_1_FIELDS = ("height", "width", "channel_order", "mean", "std", "resize", "threshold")


@pytest.fixture(scope="module")
def version_1_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    """An ONNX file as version 1 wrote it: the same network, its contract in the old form."""
    from cflnet_sdk.export.onnx import load_onnx, read_metadata, save_onnx, set_metadata

    current = onnx_model(tiny_checkpoint, tmp_path_factory)
    contract = json.loads(read_metadata(current)["cflnet.contract"])
    old = {key: contract[key] for key in VERSION_1_FIELDS} | {"version": 1}
    proto = load_onnx(current)
    set_metadata(proto, {"cflnet.contract": json.dumps(old, sort_keys=True)})
    return save_onnx(proto, tmp_path_factory.mktemp("version-1") / "v1.onnx")


def test_resize_mode_is_the_old_pipeline_bit_for_bit(version_1_onnx):
    localizer = Localizer(version_1_onnx)  # a version-1 contract: resize mode
    assert localizer.mode == "resize"
    rgb = photo_array("coffee")
    prediction = localizer.predict(rgb)
    model_size = localizer.backend.run(localizer.contract.preprocess(rgb)[None])[0]
    expected = localizer.contract.restore_probability(model_size, *rgb.shape[:2])
    assert np.array_equal(prediction.probability, expected)
    assert prediction.score == image_score(np.clip(model_size, 0.0, 1.0))


def test_a_version_1_model_file_loads_and_runs_in_either_mode(version_1_onnx):
    from cflnet_sdk.export.onnx import read_metadata

    assert json.loads(read_metadata(version_1_onnx)["cflnet.contract"])["version"] == 1
    check_prediction(Localizer(version_1_onnx).predict(photo_of(200, 301)), (200, 301))
    localizer = Localizer(version_1_onnx, mode="tile")
    contract = localizer.contract
    assert (contract.version, contract.mode, contract.tile_overlap) == (3, "tile", 16)
    check_prediction(localizer.predict(photo_of(200, 301)), (200, 301))


def test_mode_comes_from_the_contract_and_can_be_overridden(tile_onnx, ort_tile):
    assert "mode='tile'" in repr(ort_tile)
    resized = Localizer(tile_onnx, mode="resize")
    assert resized.mode == "resize" and resized.contract.tile_overlap == 32
    check_prediction(resized.predict(photo_of(500, 333)), (500, 333))
    with pytest.raises(ConfigError, match="mode 'crop'"):
        Localizer(tile_onnx, mode="crop")  # type: ignore[arg-type]


@pytest.mark.parametrize("srm", [True, False], ids=["with-srm", "error-levels-alone"])
def test_an_error_level_model_runs_end_to_end_in_both_modes(srm, ela_checkpoint, tmp_path,
                                                            jpeg_333x500):
    from cflnet_sdk.export.onnx import export_onnx, load_onnx
    from tests.conftest import error_level_checkpoint

    checkpoint = ela_checkpoint if srm else error_level_checkpoint(tmp_path, srm=False)
    onnx = export_onnx(checkpoint, tmp_path / "ela.onnx")
    dims = load_onnx(onnx, load_weights=False).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [4, 128, 128]
    for mode in ("resize", "tile"):
        a = Localizer(checkpoint, mode=mode).predict(jpeg_333x500)
        b = Localizer(onnx, mode=mode).predict(jpeg_333x500)
        check_prediction(b, (333, 500))
        assert np.abs(a.probability - b.probability).max() <= TOLERANCE
    with pytest.raises(ModelFileError, match=r"ela\.onnx: the model takes 4 input channels"):
        Localizer(onnx, contract=Contract(height=128, width=128))


def test_cflnet_predict_mode_option(tile_onnx, jpeg_333x500, tmp_path):
    out = cflnet("predict", jpeg_333x500, "--model", tile_onnx, "--mode", "resize",
                 "--out", tmp_path, "--save", "prob,json")
    assert out.returncode == 0, out.stderr
    assert "resize mode" in out.stderr
    with Image.open(tmp_path / "coffee-333x500.prob.png") as prob:
        assert prob.size == (500, 333)


def test_cflnet_benchmark_reports_milliseconds_per_megapixel_in_tile_mode(tile_onnx, tmp_path):
    from typer.testing import CliRunner

    from cflnet_sdk.cli import app

    report = tmp_path / "tiles.json"
    out = CliRunner().invoke(app, ["benchmark", "--model", str(tile_onnx), "--mode", "tile",
                                   "--megapixels", "0.05,0.1", "--warmup", "0",
                                   "--iterations", "1", "--json", str(report)])
    assert out.exit_code == 0, out.output
    rows = json.loads(report.read_text())
    assert [r["width"] * r["height"] for r in rows] == [258 * 194, 365 * 274]
    for row in rows:
        assert row["tiles"] == tile_count(row["height"], row["width"], Contract(
            height=128, width=128, mode="tile"))
        assert row["ms_per_megapixel"] == pytest.approx(
            row["ms_per_image"] / (row["width"] * row["height"] / 1e6))
        assert row["peak_rss_mb"] > 0
    assert "ms/MP" in out.output


def test_cflnet_evaluate_mode_option(tile_onnx, tmp_path):
    from sklearn.metrics import roc_auc_score

    from cflnet_sdk.training.data.readers import open_dataset, read_mask
    from cflnet_sdk.training.data.synth import SynthConfig, generate
    from cflnet_sdk.training.evaluate import evaluate

    generate(SynthConfig(seed=3, height=150, width=200, pristine_rate=0.0), tmp_path, 3)
    records = list(open_dataset(tmp_path))
    for mode in ("resize", "tile"):
        result = evaluate(tile_onnx, tmp_path, device="cpu", mode=mode)
        localizer = Localizer(tile_onnx, mode=mode)
        aucs = [roc_auc_score(read_mask(r.mask, r.polarity).ravel(),
                              localizer.predict(r.image).probability.ravel()) for r in records]
        assert result.metrics["pixel_auc"] == pytest.approx(np.mean(aucs), abs=1e-9)
