"""The scripts that train the default model on a lent GPU machine, run here on the CPU.

``pack_device_data.py`` must keep the photo split and the selection set's pixels exactly;
``device_train.sh`` (two runs, every epoch scored by ``choose_epochs.py``, the best of each run
returned in parts; then one run continuing from a returned checkpoint; and, with AVERAGE_FROM,
the average of its later epochs in place of the choice) runs end to end with a
tiny network as the slow test.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk.training.data.sources import in_held_out
from tests.conftest import noise_photos

ROOT = Path(__file__).resolve().parents[1]


def script(name: str):
    """A module of scripts/, which is not a package."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


choose = script("choose_epochs").choose
PHOTOS = {"shape": (96, 128), "quality": 90}


def make_selection(folder: Path, count: int) -> None:
    rng = np.random.default_rng(1)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    rows = []
    for i in range(count):
        image = rng.integers(0, 255, (80, 112, 3), dtype=np.uint8)
        mask = np.zeros((80, 112), np.uint8)
        mask[20:50, 30:70] = 255
        Image.fromarray(image).save(folder / "images" / f"s{i}.png")
        Image.fromarray(mask).save(folder / "masks" / f"s{i}.png")
        rows.append({"image": f"images/s{i}.png", "mask": f"masks/s{i}.png", "kind": "splice"})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_unedited(folder: Path, count: int) -> list[Path]:
    """``count`` unedited JPEGs (``"mask": null`` rows) after one forged row."""
    photos = noise_photos(folder / "images", count, shape=(64, 96), quality=80)
    rows = [{"image": "images/forged.png", "mask": "masks/forged.png", "kind": "splice"}] + [
        {"image": f"images/{p.name}", "mask": None, "kind": "authentic"} for p in photos]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return photos


def pack(tmp_path: Path, photo_share: float, held_out: int = 2, *extra: str
         ) -> tuple[Path, list[Path]]:
    """Run the packer on 40 photos, 3 pairs and 4 unedited photos, its budget a share of the
    photos' bytes; ``extra``: more of its flags."""
    photos = noise_photos(tmp_path / "photos" / "cam", 40, **PHOTOS)
    budget_mib = photo_share * sum(p.stat().st_size for p in photos) / 2**20
    make_selection(tmp_path / "misd", 3)
    make_unedited(tmp_path / "authentic", 4)
    out = tmp_path / "devdata"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "pack_device_data.py"),
                           "--photos", str(tmp_path / "photos"), "--folders", "cam",
                           "--select", str(tmp_path / "misd"), "--select-count", "2",
                           "--unedited", str(tmp_path / "authentic"), "--unedited-count", "3",
                           "--held-out", str(held_out), "--budget-mib", str(budget_mib),
                           "-o", str(out), *extra], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return out, photos


def test_pack_keeps_the_split_and_the_selection_pixels(tmp_path):
    listed = tmp_path / "validation-photos.txt"  # never packed, whatever their split
    listed.write_text("".join(f"cam/{name}\n" for name in ("p000.jpg", "p001.jpg", "p002.jpg")))
    out, photos = pack(tmp_path, 0.5, 2, "--exclude-photos", str(listed))
    photos_size = sum(p.stat().st_size for p in photos)
    packed = (out / "photos.txt").read_text().split()
    assert not {"cam/p000.jpg", "cam/p001.jpg", "cam/p002.jpg"} & set(packed)
    held = [name for name in packed if in_held_out(Path(name).name)]
    assert len(held) == min(2, sum(in_held_out(p.name) for p in photos))
    assert 5 < len(packed) - len(held) < 40  # the budget cut the training photos short
    for name in packed:  # whole files, names unchanged: the split is the same there
        assert (out / "photos" / name).read_bytes() == (tmp_path / "photos" / name).read_bytes()
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert total <= photos_size / 2 + 4096
    manifest = (out / "select" / "manifest.jsonl").read_text()
    rows = [json.loads(line) for line in manifest.splitlines()]
    assert [r["image"] for r in rows] == ["images/s0.webp", "images/s1.webp"]
    for i, row in enumerate(rows):
        original = np.asarray(Image.open(tmp_path / "misd" / "images" / f"s{i}.png"))
        assert np.array_equal(np.asarray(Image.open(out / "select" / row["image"])), original)
    unedited = [json.loads(line) for line in
                (out / "unedited" / "manifest.jsonl").read_text().splitlines()]
    assert len(unedited) == 3 and all(row["mask"] is None for row in unedited)
    for row in unedited:  # byte for byte: their compression history is what is measured
        source = tmp_path / "authentic" / row["image"]
        assert (out / "unedited" / row["image"]).read_bytes() == source.read_bytes()


def test_the_chosen_epoch_beats_ela_on_real_forgeries_then_does_best_on_synthetic():
    def row(epoch: int, real: float, synthetic: float | None) -> dict:
        return {"epoch": epoch, "pixel_auc": real, "ela_pixel_auc": 0.87,
                "synthetic_val_auc": synthetic}

    rows = [row(1, 0.90, 0.70), row(2, 0.88, 0.78), row(3, 0.80, 0.85), row(4, 0.95, None)]
    assert choose(rows)["epoch"] == 2  # epoch 3 is better on synthetic but loses to ELA
    below = [row(1, 0.80, 0.70), row(2, 0.85, 0.60)]
    assert choose(below)["epoch"] == 2  # none beats ELA: the best on the real forgeries


def test_detection_against_unedited_photos_decides_among_epochs_beating_ela():
    def row(epoch: int, real: float, detection: float | None) -> dict:
        return {"epoch": epoch, "pixel_auc": real, "ela_pixel_auc": 0.87,
                "detection_auc": detection, "synthetic_val_auc": 0.9 - epoch / 100}

    rows = [row(1, 0.90, 0.80), row(2, 0.88, 0.93), row(3, 0.85, 0.97), row(4, 0.95, None)]
    assert choose(rows)["epoch"] == 2  # epoch 3 detects better but loses to ELA
    unmeasured = [row(1, 0.90, None), row(2, 0.89, None)]
    assert choose(unmeasured)["epoch"] == 1  # no detection: the synthetic validation decides


def device_train(tmp_path: Path, data: Path, name: str, **settings: str) -> Path:
    """Run scripts/device_train.sh on the CPU with a tiny network; its $OUT folder."""
    out = tmp_path / f"out-{name}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable, "DEVICE": "cpu",
           "DATA": str(data), "OUT": str(out), "RUNS": str(tmp_path / f"runs-{name}"),
           "WORKERS": "0", "TRAIN_SECONDS": "40", "CHOOSE_SECONDS": "150", "FROM_EPOCH": "2",
           "EXTRA": "--size 64 --steps-per-epoch 2 --batch-size 2 --val-samples 2 --epochs 3",
           **settings}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "device_train.sh")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def joined(out: Path, name: str) -> Path:
    """A returned checkpoint rejoined from its parts, each within the device's file limit."""
    parts = sorted(out.glob(f"{name}.safetensors.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)
    path = out / f"{name}.safetensors"
    path.write_bytes(b"".join(p.read_bytes() for p in parts))
    return path


def choice_of(out: Path, runs: set[str]) -> dict:
    with tarfile.open(out / "results.tgz") as archive:
        choice = json.load(archive.extractfile("chosen/choice.json"))  # type: ignore[arg-type]
        assert {f"{run}/metrics.csv" for run in runs} | {f"train-{run}.log" for run in runs} \
            <= set(archive.getnames())
    assert {row["run"] for row in choice["scores"]} == runs
    assert all(row["epoch"] >= 2 for row in choice["scores"])
    return choice


@pytest.mark.slow
def test_device_training_dry_run_returns_each_runs_best_then_continues(tmp_path):
    """The whole GPU script on the CPU: two tiny runs, each epoch scored, parts that rejoin;
    then one run continuing from the first's best, whose latest epoch comes back too."""
    from cflnet_sdk import Localizer
    from cflnet_sdk.training.checkpoint import read_checkpoint_info

    data, _ = pack(tmp_path, photo_share=10, held_out=4)
    out = device_train(tmp_path, data, "first", VARIANTS="srm nosrm")
    choice = choice_of(out, {"srm", "nosrm"})
    for run in ("srm", "nosrm"):
        rows = [row for row in choice["scores"] if row["run"] == run]
        assert all(row["synthetic_val_auc"] is not None for row in rows)  # from metrics.csv
        assert all(row["detection_auc"] is not None for row in rows)  # the packed unedited set
        best = choice["best"][run]
        assert best == choose(rows)
        assert choice["kept"][run] == {"best": f"epoch-{best['epoch']:03d}.safetensors"}
        localizer = Localizer(joined(out, f"{run}-best"), device="cpu")
        assert localizer.predict(data / "select" / "images" / "s0.webp").probability.shape \
            == (80, 112)

    start = joined(out, "nosrm-best")
    again = device_train(tmp_path, data, "again", VARIANTS="nosrm", INIT=str(start), SEED="7")
    choice = choice_of(again, {"nosrm"})
    with tarfile.open(again / "results.tgz") as archive:
        log = archive.extractfile("train-nosrm.log").read().decode()  # type: ignore[union-attr]
    assert f"fine-tuning {start}" in log
    kept = choice["kept"]["nosrm"]
    assert kept["best"] == f"epoch-{choice['best']['nosrm']['epoch']:03d}.safetensors"
    assert kept.get("last", "epoch-003.safetensors") == "epoch-003.safetensors"
    assert set(kept) == {"best"} | ({"last"} if kept["best"] != "epoch-003.safetensors" else set())
    for role in kept:
        config, _ = read_checkpoint_info(joined(again, f"nosrm-{role}"))
        assert config.srm is False


@pytest.mark.slow
def test_device_training_can_return_the_average_of_its_later_epochs(tmp_path):
    """AVERAGE_FROM: no choice on the machine; the kept epochs from that one on come back
    averaged in float16, beside the latest, both loadable."""
    from safetensors.numpy import load_file

    from cflnet_sdk import Localizer

    data, _ = pack(tmp_path, photo_share=10, held_out=4)
    out = device_train(tmp_path, data, "mean", VARIANTS="nosrm", AVERAGE_FROM="2")
    assert "nosrm-mean: epoch-002.safetensors epoch-003.safetensors" in \
        (out / "device.log").read_text()
    runs = tmp_path / "runs-mean" / "nosrm"
    epochs = [load_file(runs / f"epoch-00{n}.safetensors") for n in (2, 3)]
    mean, last = load_file(joined(out, "nosrm-mean")), load_file(joined(out, "nosrm-last"))
    for key, value in mean.items():
        if value.dtype == np.float16:
            expected = (epochs[0][key].astype(np.float64) + epochs[1][key]) / 2
            assert np.allclose(value, expected, rtol=2e-3, atol=1e-4), key
            assert np.allclose(last[key], epochs[1][key], rtol=2e-3, atol=1e-4), key
    localizer = Localizer(out / "nosrm-mean.safetensors", device="cpu")
    assert localizer.predict(data / "select" / "images" / "s0.webp").probability.shape == (80, 112)
