"""Dataset readers: each real layout, mask polarity, and broken pairs reported by name."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk.errors import DataError
from cflnet_sdk.training.data.readers import (
    check_dataset,
    detect_format,
    open_dataset,
    read_casia,
    read_columbia,
    read_coverage,
    read_imd2020,
    read_manifest,
    read_nist16,
    read_paired,
)

CFLNET = str(Path(sys.executable).with_name("cflnet"))
H, W = 40, 56
RNG = np.random.default_rng(0)


def square() -> np.ndarray:
    """The ground truth every fixture encodes, whatever its file convention."""
    mask = np.zeros((H, W), dtype=bool)
    mask[10:25, 20:40] = True
    return mask


def write_image(path: Path, size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return path


def write_mask(path: Path, polarity: str = "white", size: tuple[int, int] = (H, W)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = square() if size == (H, W) else np.zeros(size, dtype=bool)
    if polarity == "green":  # Columbia: green spliced region, red host region
        rgb = np.zeros((*size, 3), dtype=np.uint8)
        rgb[mask], rgb[~mask] = (0, 255, 0), (255, 0, 0)
        Image.fromarray(rgb).save(path, quality=90, subsampling=0)
    else:
        tampered = 0 if polarity == "black" else 255
        Image.fromarray(np.where(mask, tampered, 255 - tampered).astype(np.uint8)).save(path)
    return path


def assert_pairs(dataset, tampered: int, pristine: int = 0) -> None:
    masks = [dataset.load(i)[1] for i in range(len(dataset))]
    assert sum(m.any() for m in masks) == tampered
    assert sum(not m.any() for m in masks) == pristine
    for mask in masks:
        assert mask.shape == (H, W)
        assert not mask.any() or np.array_equal(mask, square())


def test_manifest_jsonl_csv_and_folder(tmp_path):
    write_image(tmp_path / "img" / "a.png")
    write_mask(tmp_path / "gt" / "a.png")
    write_image(tmp_path / "img" / "b.png")
    write_image(tmp_path / "img" / "c.png")
    write_mask(tmp_path / "gt" / "c_black.png", size=(H, W))
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "gt" / "c.png")  # all black
    rows = [{"image": "img/a.png", "mask": "gt/a.png", "kind": "splice"},
            {"image": "img/b.png", "mask": None},
            {"image": "img/c.png", "mask": "gt/c.png"}]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = read_manifest(tmp_path)  # a folder holding a manifest
    assert [r.kind for r in dataset] == ["splice", None, None]
    assert dataset[0].image == tmp_path / "img" / "a.png"
    assert_pairs(dataset, tampered=1, pristine=2)
    (tmp_path / "list.csv").write_text("image,mask,kind\nimg/a.png,gt/a.png,splice\nimg/b.png,,\n")
    csv_set = open_dataset(tmp_path / "list.csv")
    assert len(csv_set) == 2 and csv_set[1].mask is None
    assert_pairs(csv_set, tampered=1, pristine=1)


def test_paired_folders_and_splits(tmp_path):
    for n in range(6):
        write_image(tmp_path / "Tp" / f"t{n}.jpg")
        write_mask(tmp_path / "Gt" / f"t{n}_gt.png")
    write_image(tmp_path / "Au" / "clean.jpg")
    dataset = read_paired(tmp_path)
    assert detect_format(tmp_path) == "paired"
    assert_pairs(dataset, tampered=6, pristine=1)
    first = dataset.split((0.6, 0.2, 0.2), seed=3)
    again = read_paired(tmp_path)[::-1].split((0.6, 0.2, 0.2), seed=3)
    def names(parts):
        return [[r.image.name for r in part] for part in parts]

    assert names(first) == names(again)  # listing order does not matter, the seed does
    assert [len(p) for p in first] == [4, 2, 1]
    assert len({r.image for part in first for r in part}) == 7
    assert names(first) != names(dataset.split((0.6, 0.2, 0.2), seed=4))


def test_imd2020_layout_and_list_files(tmp_path):
    for folder, ident in (("1a1ogs", "c8tt7fg"), ("1a2b3c", "xq9a1"), ("1a2b3c", "zz7k0")):
        write_image(tmp_path / "IMD2020" / folder / f"{ident}_orig.jpg")
        write_image(tmp_path / "IMD2020" / folder / f"{ident}_0.jpg")
        write_mask(tmp_path / "IMD2020" / folder / f"{ident}_0_mask.png")
    root = tmp_path / "IMD2020"
    assert detect_format(root) == "imd2020"
    assert_pairs(read_imd2020(root), tampered=3)
    assert_pairs(read_imd2020(root, include_pristine=True), tampered=3, pristine=3)
    (tmp_path / "test.txt").write_text("1a1ogs/c8tt7fg_0.jpg\nzz7k0_0.jpg\n")
    listed = read_imd2020(root, list_file=tmp_path / "test.txt")
    assert [r.image.name for r in listed] == ["c8tt7fg_0.jpg", "zz7k0_0.jpg"]
    (tmp_path / "bad.txt").write_text("nothere_0.jpg\n")
    with pytest.raises(DataError, match=r"nothere_0\.jpg"):
        read_imd2020(root, list_file=tmp_path / "bad.txt")


def test_casia_v2_ground_truth_naming(tmp_path):
    names = ["Tp_D_CRN_S_N_cha00063_art00014_11818", "Tp_S_NRN_M_N_pla00020_pla00020_10988"]
    write_image(tmp_path / "Tp" / f"{names[0]}.jpg")
    write_image(tmp_path / "Tp" / f"{names[1]}.tif")
    for name in names:
        write_mask(tmp_path / "CASIA 2 Groundtruth" / f"{name}_gt.png")
    write_image(tmp_path / "Au" / "Au_ani_00001.jpg")
    dataset = read_casia(tmp_path)
    assert detect_format(tmp_path) == "casia"
    assert [r.kind for r in dataset][:2] == ["splice", "copy-move"]
    assert_pairs(dataset, tampered=2, pristine=1)


def test_nist16_masks_are_black_on_white(tmp_path):
    root = tmp_path / "NC2016_Test0613"
    write_image(root / "probe" / "NC2016_0048.jpg")
    write_mask(root / "mask" / "NC2016_0048.png", polarity="black")
    write_image(root / "probe" / "NC2016_1234.jpg")
    reference = root / "reference" / "manipulation" / "NC2016-manipulation-ref.csv"
    reference.parent.mkdir(parents=True)
    reference.write_text("TaskID|ProbeFileID|ProbeFileName|ProbeMaskFileName|IsTarget\n"
                         "manipulation|NC2016_0048|probe/NC2016_0048.jpg|"
                         "mask/NC2016_0048.png|Y\n"
                         "manipulation|NC2016_1234|probe/NC2016_1234.jpg||N\n")
    dataset = read_nist16(root)
    assert detect_format(root) == "nist16"
    assert dataset[0].polarity == "black"
    assert_pairs(dataset, tampered=1, pristine=1)
    reference.unlink()  # no reference CSV: pair probe/ with mask/ by name
    folders = read_nist16(root, on_error="skip")
    assert_pairs(folders, tampered=1)
    assert [p.path for p in folders.problems] == [str(root / "probe" / "NC2016_1234.jpg")]


def test_columbia_green_is_the_spliced_region(tmp_path):
    write_image(tmp_path / "4cam_splc" / "canong3_canonxt_sub_01.tif")
    write_mask(tmp_path / "4cam_splc" / "edgemask" / "canong3_canonxt_sub_01_edgemask.jpg",
               polarity="green")
    write_image(tmp_path / "4cam_auth" / "canong3_02_sub_01.tif")
    dataset = read_columbia(tmp_path)
    assert detect_format(tmp_path) == "columbia"
    assert dataset[0].polarity == "green" and dataset[0].kind == "splice"
    assert_pairs(dataset, tampered=1, pristine=1)


def test_coverage_layout(tmp_path):
    write_image(tmp_path / "image" / "1t.tif")
    write_image(tmp_path / "image" / "1.tif")
    write_mask(tmp_path / "mask" / "1forged.tif")
    write_mask(tmp_path / "mask" / "1copy.tif")
    dataset = read_coverage(tmp_path)
    assert detect_format(tmp_path) == "coverage"
    assert_pairs(dataset, tampered=1, pristine=1)


def broken_paired(root: Path) -> Path:
    write_image(root / "Tp" / "good.png")
    write_mask(root / "Gt" / "good.png")
    write_image(root / "Tp" / "nomask.png")
    write_image(root / "Tp" / "wrongsize.png")
    write_mask(root / "Gt" / "wrongsize.png", size=(H + 8, W))
    write_image(root / "Tp" / "garbled.png")
    (root / "Gt" / "garbled.png").write_bytes(b"not a png at all")
    return root


def test_broken_pairs_are_reported_by_name(tmp_path):
    root = broken_paired(tmp_path)
    with pytest.raises(DataError, match="nomask"):
        read_paired(root)
    dataset = read_paired(root, on_error="skip")
    assert [r.image.name for r in dataset] == ["good.png"]
    messages = "\n".join(str(p) for p in dataset.problems)
    assert "nomask.png" in messages and "wrongsize.png is 56x48" in messages
    assert "garbled.png" in messages and "unreadable" in messages
    # A mismatch that slips past the header check is still caught when decoding.
    (root / "Gt" / "good.png").unlink()
    write_mask(root / "Gt" / "good.png", size=(H, W + 4))
    with pytest.raises(DataError, match=r"good\.png"):
        dataset.load(0)


def test_cli_data_check_reports_counts_and_problems(tmp_path):
    clean = tmp_path / "clean"
    write_image(clean / "Tp" / "a.png")
    write_mask(clean / "Gt" / "a.png")
    write_image(clean / "Au" / "b.png")
    ok = subprocess.run([CFLNET, "data", "check", str(clean)], capture_output=True, text=True,
                        timeout=60, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "images: 2  tampered: 1  pristine: 1 (50.0%)" in ok.stdout
    assert "problems: 0" in ok.stdout
    bad = subprocess.run([CFLNET, "data", "check", str(broken_paired(tmp_path / "bad"))],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1
    assert "problems: 3" in bad.stdout and "wrongsize.png" in bad.stdout
    missing = subprocess.run([CFLNET, "data", "check", str(tmp_path / "nothing")],
                             capture_output=True, text=True, timeout=60, check=False)
    assert missing.returncode == 2 and "no such dataset" in missing.stderr


def test_check_dataset_coverage_histogram(tmp_path):
    write_image(tmp_path / "Tp" / "a.png")
    write_mask(tmp_path / "Gt" / "a.png")
    report = check_dataset(read_paired(tmp_path))
    assert report.total == 1 and report.tampered == 1
    coverage = square().mean()  # 300 / 2240 = 13.4% -> the 10-25% bucket
    assert 0.1 < coverage < 0.25 and report.coverage_counts[3] == 1


def test_torch_dataset_uses_the_contract(tmp_path):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.training.data.augment import AugmentConfig
    from cflnet_sdk.training.data.synth import SynthConfig, SynthDataset
    from cflnet_sdk.training.data.torch_dataset import ForgeryTorchDataset

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    write_image(tmp_path / "Tp" / "a.png")
    write_mask(tmp_path / "Gt" / "a.png")
    contract = Contract(height=64, width=64)
    dataset = read_paired(tmp_path)
    image, mask = ForgeryTorchDataset(dataset, contract)[0]
    rgb, truth = dataset.load(0)
    assert torch.equal(image, torch.from_numpy(contract.preprocess(rgb)))
    assert torch.equal(mask, torch.from_numpy(contract.resize_mask(truth).astype(np.float32)))
    synthetic = ForgeryTorchDataset(SynthDataset(SynthConfig(height=64, width=96), length=3),
                                    contract, AugmentConfig.all(probability=1.0), seed=1)
    image, mask = synthetic[2]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert mask.shape == (64, 64) and set(mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(synthetic[2][0], image)


def test_tile_mode_dataset_crops_native_pixels_with_error_levels_of_the_whole_image(tmp_path):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.training.data.torch_dataset import ForgeryTorchDataset

    torch = pytest.importorskip("torch")
    write_image(tmp_path / "Tp" / "a.png")
    write_mask(tmp_path / "Gt" / "a.png")
    dataset = read_paired(tmp_path)
    rgb, truth = dataset.load(0)
    contract = Contract(height=32, width=32, mode="tile", tile_overlap=16, ela_qualities=(90,))
    whole = contract.normalize(contract.input_pixels(rgb))
    tiles = ForgeryTorchDataset(dataset, contract, seed=3)
    corners = set()
    for epoch in range(4):
        tiles.set_epoch(epoch)
        image, mask = tiles[0]
        assert image.shape == (4, 32, 32) and mask.shape == (32, 32)
        matches = [(t, left) for t in range(0, rgb.shape[0] - 31, 8)
                   for left in range(0, rgb.shape[1] - 31, 8)
                   if np.array_equal(image.numpy(), whole[:, t:t + 32, left:left + 32])]
        assert len(matches) >= 1, "a tile-mode sample is an 8-aligned crop of the whole image"
        t, left = matches[0]
        assert torch.equal(mask, torch.from_numpy(truth[t:t + 32, left:left + 32]
                                                  .astype(np.float32)))
        corners.add(matches[0])
    assert len(corners) > 1, "each epoch draws another crop"
