"""INT8 calibration reads real photos only and says which files it passed over."""

from __future__ import annotations

import shutil

import numpy as np
from PIL import Image

from cflnet_sdk.contract import Contract
from cflnet_sdk.export.calibration import collect_calibration, spread


def test_masks_and_other_files_are_skipped_and_named(photo_files, tmp_path):
    shutil.copy(photo_files["jpeg"], tmp_path / "astronaut.jpg")
    (tmp_path / "nested").mkdir()
    shutil.copy(photo_files["png"], tmp_path / "nested" / "chelsea.png")
    (tmp_path / "masks").mkdir()
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 10:30] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "astronaut.png")  # a dataset's mask folder
    Image.fromarray(mask).save(tmp_path / "astronaut_gt.png")  # a mask by its name
    Image.fromarray(mask).convert("RGB").save(tmp_path / "region.png")  # by its two values
    (tmp_path / "README.md").write_text("terms")
    (tmp_path / "truncated.jpg").write_bytes(photo_files["jpeg"].read_bytes()[:300])

    calibration = collect_calibration(Contract(64, 64), tmp_path, count=10)

    assert calibration.photos == [tmp_path / "astronaut.jpg", tmp_path / "nested" / "chelsea.png"]
    assert len(calibration.inputs) == 2
    reasons = {path.relative_to(tmp_path).as_posix(): why for path, why in calibration.skipped}
    assert reasons.keys() == {"masks/astronaut.png", "astronaut_gt.png", "region.png",
                              "README.md", "truncated.jpg"}
    assert reasons["masks/astronaut.png"] == "a mask (in a 'masks' folder)"
    assert reasons["astronaut_gt.png"] == "a mask (by its name)"
    assert reasons["region.png"] == "a mask (two pixel values only)"
    assert reasons["README.md"] == "not an image file"
    assert reasons["truncated.jpg"].startswith("unreadable")
    text = "\n".join(calibration.lines())
    assert "2 photos" in text and "skipped 5 files" in text and "region.png" in text


def test_spread_picks_evenly_then_keeps_the_rest_as_stand_ins():
    assert spread(3, 7) == [0, 3, 6, 1, 2, 4, 5]
    assert spread(9, 2) == [0, 1]
