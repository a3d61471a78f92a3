"""``cflnet variants``: every precision variant of a checkpoint built, evaluated and timed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cflnet_sdk.cli import app
from cflnet_sdk.errors import DataError

pytest.importorskip("onnxruntime", reason="the variants run on onnxruntime")
pytest.importorskip("onnxslim", reason="the exporter simplifies with onnxslim (export extra)")


@pytest.fixture(scope="module")
def forgeries(tmp_path_factory) -> Path:
    from cflnet_sdk.training.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("variants-data")
    generate(SynthConfig(seed=3, height=150, width=200, pristine_rate=0.0), root, 3)
    return root


@pytest.fixture(scope="module")
def calibration_photos(photo_files, tmp_path_factory) -> Path:
    """Real photos, with a dataset's mask folder beside them."""
    root = tmp_path_factory.mktemp("calib")
    for path in photo_files.values():
        shutil.copy(path, root / path.name)
    (root / "masks").mkdir()
    Image.fromarray(np.eye(64, dtype=np.uint8) * 255).save(root / "masks" / "astronaut.png")
    return root


def test_variants_of_a_tile_mode_model_with_error_levels(ela_checkpoint, forgeries,
                                                         calibration_photos, tmp_path):
    out = tmp_path / "variants"
    result = CliRunner().invoke(app, [
        "variants", str(ela_checkpoint), "--data", str(forgeries), "--calib",
        str(calibration_photos), "-o", str(out), "--calib-count", "2", "--megapixels", "0.05",
        "--iterations", "1"])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "variants.json").read_text())
    assert document["mode"] == "tile" and document["unit"] == "ms/MP"
    rows = {row["variant"]: row for row in document["rows"]}
    assert list(rows) == ["fp32", "torch eager", "fp16", "int8-cpu", "int8-tensorrt"]
    assert [rows[n]["precision"] for n in rows] == ["fp32", "fp32", "fp16", "int8-cpu",
                                                    "int8-tensorrt"]
    for name, row in rows.items():
        assert row["ms"] > 0 and row["size_mb"] > 0 and 0 <= row["pixel_auc"] <= 1, name
        assert row["evaluation"]["metrics"]["images"] == 3
        assert 0 <= row["mask_iou_vs_fp32"] <= 1
    assert rows["torch eager"]["speedup_vs_torch_eager"] == pytest.approx(1.0)
    assert rows["fp32"]["auc_change_vs_fp32"] == 0 and rows["fp32"]["mask_iou_vs_fp32"] == 1
    assert rows["torch eager"]["auc_change_vs_fp32"] == pytest.approx(0, abs=1e-4)
    assert rows["torch eager"]["mask_iou_vs_fp32"] > 0.99
    calibration = document["calibration"]
    assert len(calibration["photos"]) == 2 and calibration["inputs"] > 2  # several tiles each
    assert [Path(s["file"]).name for s in calibration["skipped"]] == ["astronaut.png"]
    for name in ("fp32", "fp16", "int8-cpu", "int8-tensorrt"):
        import onnx

        graph = onnx.load(str(out / f"ela-{name}.onnx")).graph
        assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == 4  # RGB + error level
    table = (out / "variants.md").read_text()
    assert "| variant | file | MB | ms/MP | speed-up vs torch eager | pixel AUC |" in table
    assert "centre prior (no model)" in table and "Fastest variant within 0.005 AUC" in table
    assert "cflnet variants" in table and str(forgeries) in table


def test_calibration_photos_must_not_be_evaluation_images(forgeries, tmp_path):
    from cflnet_sdk.export.variants import check_disjoint

    image = sorted((forgeries / "images").iterdir())[0]
    with pytest.raises(DataError, match="image of the evaluation data"):
        check_disjoint([image], forgeries)
    twin = tmp_path / "renamed.png"
    shutil.copy(image, twin)
    with pytest.raises(DataError, match=r"renamed\.png"):
        check_disjoint([twin], forgeries)
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(other)
    check_disjoint([other], forgeries)
