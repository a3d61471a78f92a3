"""Synthetic forgeries: edits stay inside their masks, bytes are a function of (seed, index)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk.contract import error_level
from cflnet_sdk.errors import DataError
from cflnet_sdk.training.data import sources
from cflnet_sdk.training.data.manipulations import KINDS
from cflnet_sdk.training.data.synth import (
    NATIVE_RECIPE,
    SynthConfig,
    SynthDataset,
    generate,
    generate_sample,
    manipulate,
)
from tests.conftest import noise_photos

SMALL = {"height": 96, "width": 128}
CFLNET = str(Path(sys.executable).with_name("cflnet"))  # the installed console script


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_pixels_only_inside_its_mask(kind):
    config = SynthConfig(seed=7, kinds=(kind,), pristine_rate=0.0, **SMALL)
    for index in range(6):
        view, edited, params = manipulate(config, index)
        assert edited is not None and params["kind"] == kind
        assert edited.image.shape == view.shape and edited.image.dtype == np.uint8
        changed = (edited.image != view).any(axis=2)
        assert changed.any(), f"{kind} #{index} changed nothing"
        assert not (changed & ~edited.mask).any(), "a changed pixel lies outside the mask"
        # The mask is the edited region, not the whole image, and mostly really changed.
        assert 0.005 < edited.mask.mean() < 0.6
        assert changed.sum() >= 0.5 * edited.mask.sum()


def test_pristine_samples_have_no_mask_and_post_processing_keeps_the_mask():
    config = SynthConfig(seed=3, pristine_rate=0.5, post_rate=1.0, **SMALL)
    kinds = set()
    for index in range(12):
        sample = generate_sample(config, index)
        _, edited, _ = manipulate(config, index)
        kinds.add(sample.kind)
        assert sample.image.shape == (96, 128, 3)
        assert sample.params["post"], "post_rate=1 must post-process every sample"
        if sample.kind == "pristine":
            assert sample.mask is None and edited is None
        else:
            assert np.array_equal(sample.mask, edited.mask)
    assert "pristine" in kinds and len(kinds) > 2


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_same_seed_same_bytes_across_worker_counts(tmp_path):
    config = SynthConfig(seed=11, pristine_rate=0.2, **SMALL)
    one = generate(config, tmp_path / "one", 10, workers=1)
    two = generate(config, tmp_path / "two", 10, workers=2)
    assert _files(one.out) == _files(two.out)
    other = generate(SynthConfig(seed=12, **SMALL), tmp_path / "other", 10)
    assert _files(other.out)["manifest.jsonl"] != _files(one.out)["manifest.jsonl"]


def test_manifest_regenerates_every_sample(tmp_path):
    config = SynthConfig(seed=5, pristine_rate=0.3, **SMALL)
    generate(config, tmp_path, 8)
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [line["index"] for line in lines] == list(range(8))
    saved = SynthConfig.from_json((tmp_path / "synth_config.json").read_text())
    assert saved == config
    for line in lines:
        assert set(line) >= {"image", "mask", "kind", "parameters", "seed"}
        sample = generate_sample(saved, line["index"])
        assert np.array_equal(np.asarray(Image.open(tmp_path / line["image"])), sample.image)
        if line["mask"] is None:
            assert line["kind"] == "pristine" and sample.mask is None
        else:
            mask = np.asarray(Image.open(tmp_path / line["mask"]))
            assert set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask == 255, sample.mask)
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"


def test_streaming_dataset_matches_files_and_offsets(tmp_path):
    config = SynthConfig(seed=2, **SMALL)
    stream = SynthDataset(config, length=4)
    shifted = SynthDataset(config, length=2, offset=2)
    rgb, mask = stream.load(3)
    assert np.array_equal(rgb, shifted.load(1)[0]) and np.array_equal(mask, shifted.load(1)[1])
    assert mask.dtype == bool and mask.shape == rgb.shape[:2]
    assert [s.index for s in stream] == [0, 1, 2, 3]
    with pytest.raises(IndexError):
        stream.sample(4)


def test_user_photo_folders_and_missing_sources(tmp_path, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.jpg"):
        Image.fromarray(rng.integers(0, 255, (80, 90, 3), dtype=np.uint8)).save(folder / name)
    config = SynthConfig(seed=1, sources=(str(folder),), kinds=("splice",), pristine_rate=0.0,
                         height=64, width=64)
    sample = generate_sample(config, 0)
    assert sample.params["photo"].endswith((".png", ".jpg")) and sample.mask.any()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no photos"):
        generate_sample(SynthConfig(sources=(str(tmp_path / "empty"),)), 0)
    with pytest.raises(DataError, match="does not exist"):
        generate_sample(SynthConfig(sources=(str(tmp_path / "missing"),)), 0)
    monkeypatch.setattr(sources, "packaged_photos", lambda: {})
    with pytest.raises(DataError, match="pip install scikit-image"):
        generate_sample(SynthConfig(seed=99, **SMALL), 0)


def test_bad_settings_are_clear_errors():
    with pytest.raises(DataError, match="unknown manipulation"):
        SynthConfig(kinds=("blend",))
    with pytest.raises(DataError, match="jpeg_quality"):
        SynthConfig(jpeg_quality=(90, 10))
    with pytest.raises(DataError, match="donor_scale"):
        SynthConfig(donor_scale=(1.2, 0.5))
    with pytest.raises(DataError, match="donor_jpeg_rate"):
        SynthConfig(donor_jpeg_rate=1.5)


def test_cli_synth_writes_samples_and_preview(tmp_path):
    out = tmp_path / "synth"
    result = subprocess.run(
        [CFLNET, "synth", "--out", str(out), "--count", "6",
         "--seed", "4", "--size", "64x96", "--kinds", "splice,removal", "--workers", "2",
         "--preview"], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "wrote 6 samples" in result.stdout
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert {json.loads(line)["kind"] for line in lines} <= {"splice", "removal", "pristine"}
    assert Image.open(out / "images" / "000000.png").size == (96, 64)
    with Image.open(out / "preview.png") as sheet:
        assert sheet.width > 400
    bad = subprocess.run([CFLNET, "synth", "--out", str(tmp_path / "x"), "--kinds", "warp"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 2 and "unknown manipulation kinds" in bad.stderr


def _centre_prior(height: int, width: int) -> np.ndarray:
    y = np.abs(np.linspace(-1.0, 1.0, height))[:, None]
    x = np.abs(np.linspace(-1.0, 1.0, width))[None, :]
    return 1.0 - np.maximum(y, x)


def test_edits_carry_no_location_prior():
    """Edits land anywhere: a centre-weighted map scores near chance, and borders get cut."""
    from sklearn.metrics import roc_auc_score

    config = SynthConfig(seed=21, height=96, width=96, pristine_rate=0.0)
    prior, aucs, touches, regions, shares = _centre_prior(96, 96), [], 0, set(), []
    for index in range(80):
        sample = generate_sample(config, index)
        aucs.append(roc_auc_score(sample.mask.ravel(), prior.ravel()))
        border = np.concatenate([sample.mask[0], sample.mask[-1], sample.mask[:, 0],
                                 sample.mask[:, -1]])
        touches += bool(border.any())
        regions.add(len(sample.params["regions"]))
        shares.append(sample.mask.mean())
    assert np.mean(aucs) <= 0.55, np.mean(aucs)
    assert touches >= 20 and regions == {1, 2, 3}
    assert min(shares) < 0.03 and max(shares) > 0.2


def test_native_views_keep_the_photo_pixels_on_its_grid(tmp_path):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "p.png")
    config = SynthConfig(seed=3, height=64, width=96, sources=(str(tmp_path),), native=True,
                         pristine_rate=1.0, post_rate=0.0)
    for index in range(6):
        view = generate_sample(config, index).image
        found = [(t, left) for t in range(0, 300 - 64 + 1, 16)
                 for left in range(0, 420 - 96 + 1, 16)
                 if np.array_equal(photo[t:t + 64, left:left + 96], view) or
                 np.array_equal(photo[t:t + 64, left:left + 96][:, ::-1], view)]
        assert found, "a native view must be an unresampled crop on the 16-pixel grid"
    small = sources.native_view(photo[:40, :50], rng, 64, 96)
    assert small.shape == (64, 96, 3)


def test_held_out_photos_never_feed_training(tmp_path):
    rng = np.random.default_rng(1)
    for i in range(40):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            tmp_path / f"photo{i:02d}.png")
    train = sources.PhotoSource((str(tmp_path),), "train")
    held_out = sources.PhotoSource((str(tmp_path),), "held-out")
    assert held_out.names and not set(train.names) & set(held_out.names)
    assert len(train) + len(held_out) == 40
    config = SynthConfig(seed=2, height=32, width=32, sources=(str(tmp_path),),
                         split="held-out", kinds=("splice",), pristine_rate=0.0)
    used = {generate_sample(config, i).params["photo"] for i in range(10)}
    assert used <= set(held_out.names)
    with pytest.raises(DataError, match="unknown photo split"):
        SynthConfig(split="test")


def test_listed_photos_are_left_out_wherever_the_folder_is(tmp_path):
    """``exclude``: photos kept for validation by a list of folder/file names never feed the
    generator, whichever split they fall in, and a saved recipe keeps the list."""
    rng = np.random.default_rng(2)
    folder = tmp_path / "photos" / "cam"
    folder.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
            folder / f"photo{i:02d}.png")
    listed = tmp_path / "list.txt"
    listed.write_text("# validation\n\ncam/photo00.png\n  cam/photo01.png\n  # cam/photo03.png\n"
                      "am/photo02.png\n")
    exclude = sources.listed_photos(listed)
    assert exclude == ("cam/photo00.png", "cam/photo01.png", "am/photo02.png")
    kept = sources.PhotoSource((str(tmp_path / "photos"),), "all", exclude).names
    assert {Path(n).name for n in kept} == {f"photo{i:02d}.png" for i in range(2, 12)}
    config = SynthConfig(seed=1, height=32, width=32, sources=(str(folder),), exclude=exclude,
                         kinds=("splice",), pristine_rate=0.0)
    used = {Path(generate_sample(config, i).params["photo"]).name for i in range(20)}
    assert used and not used & {"photo00.png", "photo01.png"}
    assert SynthConfig.from_json(config.to_json()) == config
    everything = tuple(f"cam/photo{i:02d}.png" for i in range(12))
    with pytest.raises(DataError, match="less the excluded ones"):
        sources.PhotoSource((str(folder),), "all", everything).names  # noqa: B018
    with pytest.raises(DataError, match=r"missing\.txt"):
        sources.listed_photos(tmp_path / "missing.txt")


def test_native_hosts_get_a_jpeg_history_on_their_grid_when_asked(tmp_path):
    from cflnet_sdk.training.data.ops import jpeg_roundtrip

    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "p.png")
    raw = SynthConfig(seed=3, height=64, width=96, sources=(str(tmp_path),), native=True,
                      pristine_rate=1.0, post_rate=0.0, jpeg_quality=(75, 75))
    compressed = SynthConfig(**{**raw.__dict__, "host_jpeg_rate": 1.0})
    for index in range(3):
        view = generate_sample(raw, index).image
        sample = generate_sample(compressed, index)
        assert np.array_equal(sample.image, jpeg_roundtrip(view, 75))
        assert sample.params["host_jpeg"] == 75 and "host_jpeg" not in generate_sample(
            raw, index).params


def test_native_recipe_splices_carry_a_fresher_history_than_their_host():
    """Real splices are brighter in error level than their host (MISD: 97% of images); the
    recipe's splices must teach that rule, not its opposite (the old recipe: 70% here)."""
    config = SynthConfig(**{**NATIVE_RECIPE, "save_jpeg_rate": 0.0, "post_rate": 0.0},
                         seed=5, kinds=("splice",), pristine_rate=0.0)
    brighter = []
    for index in range(40):
        sample = generate_sample(config, index)
        level = error_level(sample.image, 90).astype(np.float32)
        brighter.append(level[sample.mask].mean() > level[~sample.mask].mean())
    assert np.mean(brighter) >= 0.8


def test_saved_as_jpeg_at_the_end_when_asked():
    config = SynthConfig(seed=8, save_jpeg_rate=1.0, post_rate=0.0, jpeg_quality=(70, 70),
                         **SMALL)
    sample = generate_sample(config, 0)
    assert sample.params["post"] == [{"op": "save-jpeg", "quality": 70}]


def test_cli_synth_native_held_out(tmp_path):
    photos = tmp_path / "photos"
    noise_photos(photos, 30, quality=80, seed=5)
    out = tmp_path / "synth"
    result = subprocess.run([CFLNET, "synth", "--out", str(out), "--count", "5", "--size", "64",
                             "--native", "--split", "held-out", "--sources", str(photos)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    saved = SynthConfig.from_json((out / "synth_config.json").read_text())
    assert saved.native and saved.split == "held-out" and saved.post_rate == 0.3
    held_out = set(sources.PhotoSource((str(photos),), "held-out").names)
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert {line["parameters"]["photo"] for line in lines} <= held_out


def test_cli_synth_regenerates_a_set_from_its_saved_config(tmp_path):
    photos = tmp_path / "photos"
    noise_photos(photos, 6, quality=85, seed=6)
    first, again = tmp_path / "first", tmp_path / "again"
    made = subprocess.run([CFLNET, "synth", "--out", str(first), "--count", "4", "--size", "64",
                           "--native", "--seed", "3", "--jpeg-quality", "70-80", "--sources",
                           str(photos)], capture_output=True, text=True, timeout=120, check=False)
    assert made.returncode == 0, made.stderr
    moved = photos.rename(tmp_path / "moved")  # the saved folder is gone: --sources replaces it
    remade = subprocess.run([CFLNET, "synth", "--out", str(again), "--count", "4", "--config",
                             str(first / "synth_config.json"), "--sources", str(moved)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert remade.returncode == 0, remade.stderr
    files = sorted(p.relative_to(first) for p in first.glob("*s/*.png"))
    assert len(files) >= 4
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)
    bad = subprocess.run([CFLNET, "synth", "--out", str(tmp_path / "bad"), "--config",
                          str(first / "manifest.jsonl")], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode != 0 and "synth_config.json" in bad.stderr


def test_first_held_out_recipe_still_reads_as_it_was_made():
    """docs/held-out-synthetic-v1.json predates donor_scale and donor_jpeg_rate: their defaults
    must stay the generator's behaviour of then, or the model card's first synthetic set moves."""
    root = Path(__file__).resolve().parents[1]
    config = SynthConfig.from_json((root / "docs/held-out-synthetic-v1.json").read_text())
    assert (config.host_jpeg_rate, config.donor_scale, config.donor_jpeg_rate) == (
        0.5, (0.5, 2.0), 0.5)
    assert (config.seed, config.split, config.native) == (20261125, "held-out", True)


def test_photo_cache_keeps_recent_photos_within_its_byte_budget(tmp_path):
    paths = [str(p) for p in noise_photos(tmp_path / "cam", 4, shape=(40, 50))]
    cache = sources.PhotoCache(budget=2 * 40 * 50 * 3)  # two photos
    first = cache.get(paths[0])
    assert first.shape == (40, 50, 3) and not first.flags.writeable
    assert cache.get(paths[0]) is first  # a hit: not decoded again
    cache.get(paths[1])
    cache.get(paths[0])  # now the most recent, so paths[1] goes first
    cache.get(paths[2])
    assert cache.used == 2 * first.nbytes
    assert cache.get(paths[0]) is first
    assert cache.get(paths[1]) is not None and cache.used <= cache.budget
    tiny = sources.PhotoCache(budget=10)  # smaller than any photo: still returns it
    assert tiny.get(paths[3]).shape == (40, 50, 3) and tiny.used == first.nbytes
