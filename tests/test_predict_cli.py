"""``cflnet predict`` as a user runs it: a real subprocess over a folder with a bad file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk import Localizer
from tests.test_localizer import onnx_model

CLI = [sys.executable, "-c", "from cflnet_sdk.cli import main; main()"]


def cflnet(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    return onnx_model(tiny_checkpoint, tmp_path_factory)


@pytest.fixture(scope="module")
def folder(photo_files, tmp_path_factory) -> Path:
    """Three good photos (one in a subfolder), an empty file and a truncated JPEG."""
    root = tmp_path_factory.mktemp("inputs")
    shutil.copy(photo_files["jpeg"], root / "astronaut.jpg")
    shutil.copy(photo_files["png"], root / "chelsea.png")
    (root / "sub").mkdir()
    shutil.copy(photo_files["gray"], root / "sub" / "camera.png")
    (root / "empty.jpg").write_bytes(b"")
    data = photo_files["jpeg"].read_bytes()
    (root / "cut.jpg").write_bytes(data[: len(data) // 4])
    (root / "notes.txt").write_text("not an image, and not picked up from a folder")
    return root


@pytest.fixture(scope="module")
def run(folder, tiny_onnx, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("predictions")
    result = cflnet("predict", folder, "--model", tiny_onnx, "--out", out,
                    "--save", "mask,overlay,prob,json", "--batch-size", "2")
    return result, out


def test_bad_files_are_reported_by_name_and_the_rest_written(run, folder):
    result, out = run
    assert result.returncode == 1, result.stderr
    assert str(folder / "empty.jpg") in result.stderr and str(folder / "cut.jpg") in result.stderr
    assert "3 of 5 image(s) done, 2 failed" in result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([
        "astronaut.mask.png", "astronaut.overlay.jpg", "astronaut.prob.png",
        "chelsea.mask.png", "chelsea.overlay.png", "chelsea.prob.png",
        "camera.mask.png", "camera.overlay.png", "camera.prob.png", "predictions.jsonl"])


def test_summary_has_one_line_per_input(run, folder):
    _, out = run
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    by_name = {Path(r["path"]).name: r for r in records}
    assert set(by_name) == {"astronaut.jpg", "chelsea.png", "camera.png", "empty.jpg", "cut.jpg"}
    assert "empty" in by_name["empty.jpg"]["error"] and "cut.jpg" in by_name["cut.jpg"]["error"]
    good = by_name["astronaut.jpg"]
    assert (good["width"], good["height"]) == (512, 512) and 0 <= good["score"] <= 1
    assert good["outputs"]["mask"] == "astronaut.mask.png"


def test_written_maps_match_the_python_api(run, folder, tiny_onnx):
    _, out = run
    pred = Localizer(tiny_onnx).predict(folder / "chelsea.png")
    mask = np.asarray(Image.open(out / "chelsea.mask.png"))
    assert np.array_equal(mask > 127, pred.mask)
    with Image.open(out / "chelsea.prob.png") as image:
        assert image.mode.startswith("I;16") or image.mode == "I"
        levels = np.asarray(image).astype(np.float64) / 65535.0
    assert np.abs(levels - pred.probability).max() <= 1.0 / 65535.0
    overlay = Image.open(out / "chelsea.overlay.png")
    assert overlay.size == (pred.size[1], pred.size[0]) and overlay.mode == "RGB"


def test_globs_files_and_options(folder, tiny_checkpoint, tmp_path):
    result = cflnet("predict", f"{folder}/**/*.png", folder / "astronaut.jpg", "--model",
                    tiny_checkpoint, "--out", tmp_path, "--save", "json", "--threshold", "0",
                    "--backend", "torch", "--device", "cpu", "--no-progress")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text()
               .splitlines()]
    assert len(records) == 3 and all(r["tampered_fraction"] == 1.0 for r in records)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]


def test_missing_model_file_and_bad_inputs_give_clear_errors(folder, tiny_onnx, tmp_path):
    result = cflnet("predict", folder / "astronaut.jpg", "--model", tmp_path / "absent.onnx",
                    "--out", tmp_path)  # without --model the shipped default is used
    assert result.returncode == 2 and "absent.onnx" in result.stderr
    result = cflnet("predict", tmp_path / "nope.jpg", "--model", tiny_onnx, "--out", tmp_path)
    assert result.returncode == 1 and "nope.jpg: no such file" in result.stderr
    result = cflnet("predict", folder, "--model", tiny_onnx, "--save", "mask,video")
    assert result.returncode == 2 and "--save" in result.stderr


def test_cli_help_never_imports_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from typer.testing import CliRunner\nfrom cflnet_sdk.cli import app\n"
            "for args in ([], ['predict', '--help'], ['benchmark', '--help']):\n"
            "    result = CliRunner().invoke(app, args + ['--help'] if not args else args)\n"
            "    assert result.exit_code == 0, result.output\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.stdout.strip() == "ok", result.stderr


def test_a_folder_of_phone_photos_in_mixed_formats_with_the_default_model(tmp_path):
    pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra (pillow-heif)")
    from tests.conftest import photo_array
    from tests.test_images import write_exif_rotated, write_heic

    photos = tmp_path / "camera roll"
    photos.mkdir()
    upright = photo_array("chelsea")  # 300x451, stored sideways below as phones do
    sideways = np.ascontiguousarray(np.rot90(upright, 1))
    write_heic(photos / "IMG_0001.HEIC", sideways, orientation=6)
    write_exif_rotated(photos / "IMG_0002.JPG", sideways)
    Image.fromarray(upright).save(photos / "screenshot.png")
    Image.fromarray(upright).save(photos / "scan.jp2")
    result = cflnet("predict", photos, "--out", tmp_path / "out", "--save", "json,overlay",
                    "--no-progress", timeout=300)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl")
               .read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == [
        "IMG_0001.HEIC", "IMG_0002.JPG", "scan.jp2", "screenshot.png"]
    assert all((r["width"], r["height"]) == (451, 300) for r in records), records
    assert (tmp_path / "out" / "IMG_0001.overlay.jpg").is_file()
