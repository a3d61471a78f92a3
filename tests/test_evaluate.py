"""``cflnet evaluate``: its numbers equal scikit-learn's on the same predictions."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("torch")
from sklearn.metrics import f1_score, jaccard_score, roc_auc_score

from .test_train import one_thread, tiny_env  # noqa: F401


@pytest.fixture(scope="module")
def forgeries(tmp_path_factory):
    """Two small synthetic datasets on disk, at a size other than the model's (72x88)."""
    from cflnet_sdk.training.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("eval")
    for name, seed in (("set_a", 11), ("set_b", 16)):  # 1 and 2 pristine images
        generate(SynthConfig(seed=seed, height=72, width=88, pristine_rate=0.4), root / name, 8)
    return root / "set_a", root / "set_b"


def direct_metrics(model, data) -> dict[str, float]:
    """The same predictions through Localizer, scored with scikit-learn only."""
    from cflnet_sdk import Localizer
    from cflnet_sdk.training.data.readers import open_dataset, read_mask

    localizer = Localizer(model, backend="torch", device="cpu")
    records = list(open_dataset(data))
    predictions = localizer.predict_batch([r.image for r in records], batch_size=3)
    per_image, flip, probabilities, masks, scores, labels = [], [], [], [], [], []
    for record, prediction in zip(records, predictions, strict=True):
        mask = (np.zeros(prediction.size, bool) if record.mask is None
                else read_mask(record.mask, record.polarity))
        if 0 < mask.sum() < mask.size:
            auc = roc_auc_score(mask.ravel(), prediction.probability.ravel())
            per_image.append(auc)
            flip.append(max(auc, 1 - auc))
        probabilities.append(prediction.probability.ravel())
        masks.append(mask.ravel())
        scores.append(prediction.score)
        labels.append(mask.any())
    pixels, truth = np.concatenate(probabilities), np.concatenate(masks)
    return {"pixel_auc": float(np.mean(per_image)),
            "pixel_auc_flip_invariant_paper": float(np.mean(flip)),
            "pixel_auc_images": len(per_image),
            "pooled_pixel_auc": roc_auc_score(truth, pixels),
            "pixel_f1": f1_score(truth, pixels >= 0.5),
            "pixel_iou": jaccard_score(truth, pixels >= 0.5),
            "image_auc": roc_auc_score(labels, scores), "images": len(labels)}


def test_metrics_match_scikit_learn(tiny_checkpoint, forgeries, tmp_path):
    from cflnet_sdk.training.evaluate import evaluate, write_json

    result = evaluate(tiny_checkpoint, forgeries[0], backend="torch", device="cpu",
                      batch_size=3)
    write_json([result], tmp_path / "out.json")
    metrics = json.loads((tmp_path / "out.json").read_text())["results"][0]["metrics"]
    expected = direct_metrics(tiny_checkpoint, forgeries[0])
    assert metrics["images"] == expected["images"] == 8
    assert metrics["pixel_auc_images"] == expected["pixel_auc_images"]
    assert metrics["pixel_auc_skipped_single_class"] == 8 - expected["pixel_auc_images"] > 0
    assert metrics["skipped_unreadable"] == 0
    for key in ("pixel_auc", "pixel_auc_flip_invariant_paper", "pixel_f1", "pixel_iou",
                "image_auc"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key
    # pooled AUC comes from a 10,000-bin histogram: equal to within the bin width
    assert metrics["pooled_pixel_auc"] == pytest.approx(expected["pooled_pixel_auc"], abs=1e-3)


def test_cli_evaluate_matrix_json_and_plots(tiny_checkpoint, forgeries, tmp_path):
    """A real ``cflnet evaluate`` subprocess: 2 models x 2 datasets, JSON and plots."""
    second = tmp_path / "other" / tiny_checkpoint.name  # same file name, another folder
    second.parent.mkdir()
    second.write_bytes(tiny_checkpoint.read_bytes())
    command = [sys.executable, "-m", "cflnet_sdk", "evaluate", "--model", str(tiny_checkpoint),
               "--model", str(second), "--data", str(forgeries[0]), "--data",
               str(forgeries[1]), "--device", "cpu", "--json", str(tmp_path / "e.json"),
               "--plots", str(tmp_path / "plots"), "--examples", "2"]
    done = subprocess.run(command, capture_output=True, text=True, env=tiny_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Cross-dataset matrix" in done.stdout and "pixel AUC" in done.stdout
    assert "Against training-free baselines" in done.stdout
    assert done.stdout.count("baselines on") == 2  # once per dataset, not once per model
    document = json.loads((tmp_path / "e.json").read_text())
    assert len(document["results"]) == 4 + 2 * 2  # models x datasets, then baselines x datasets
    assert [r["baseline"] for r in document["results"]] == [False] * 4 + [True] * 4
    for result in document["results"][:4]:
        assert {"centre_prior_pixel_auc", "ela_pixel_auc", "beats_centre_prior",
                "beats_ela"} <= set(result["metrics"])
    grid = document["matrix"]
    assert grid["metric"] == "pixel_auc" and len(grid["values"]) == 4
    assert grid["models"][2:] == ["centre prior", "ELA"]
    assert grid["values"][0] == grid["values"][1]  # the same weights under two names
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert "roc.png" in plots
    assert sum("_worst" in p for p in plots) == sum("_best" in p for p in plots) == 8
    assert any(p.startswith("other-") for p in plots)  # names told apart by their folder


def test_model_against_baselines(tiny_checkpoint, forgeries):
    """Each baseline's AUC on the model's images and the share the model beats, overall and per
    kind, equal to a direct computation from Localizer's maps and the baselines' maps."""
    from cflnet_sdk import Localizer
    from cflnet_sdk.images import load_image
    from cflnet_sdk.training.baselines import BASELINES
    from cflnet_sdk.training.data.readers import open_dataset, read_mask
    from cflnet_sdk.training.evaluate import evaluate, render_tables

    result = evaluate(tiny_checkpoint, forgeries[1], backend="torch", device="cpu")
    localizer = Localizer(tiny_checkpoint, backend="torch", device="cpu")
    rows: dict[str, list[tuple[float, dict[str, float]]]] = {}
    for record in open_dataset(forgeries[1]):
        if record.mask is None:
            continue
        mask = read_mask(record.mask, record.polarity)
        rgb = load_image(record.image)
        model = roc_auc_score(mask.ravel(), localizer.predict(rgb).probability.ravel())
        baselines = {k: roc_auc_score(mask.ravel(), f(rgb).ravel()) for k, f in BASELINES.items()}
        for group in ("all", record.kind):
            rows.setdefault(group, []).append((model, baselines))
    for group, pairs in rows.items():
        metrics = result.metrics if group == "all" else result.metrics["by_kind"][group]
        assert metrics["baseline_images"] == len(pairs) == metrics["pixel_auc_images"]
        for key in BASELINES:
            assert metrics[f"{key}_pixel_auc"] == pytest.approx(
                np.mean([b[key] for _, b in pairs]), abs=1e-9)
            assert metrics[f"beats_{key}"] == pytest.approx(
                np.mean([m > b[key] for m, b in pairs]), abs=1e-9)
    assert result.metrics["by_kind"]["pristine"]["baseline_images"] == 0
    assert result.metrics["by_kind"]["pristine"]["beats_ela"] is None
    assert any("training-free" in str(table.title) for table in render_tables([result]))


def test_cli_baselines_only(forgeries, tmp_path):
    command = [sys.executable, "-m", "cflnet_sdk", "evaluate", "--baselines-only", "--data",
               str(forgeries[0]), "--json", str(tmp_path / "b.json")]
    done = subprocess.run(command, capture_output=True, text=True, env=tiny_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "centre prior" in done.stdout and "ELA" in done.stdout
    document = json.loads((tmp_path / "b.json").read_text())
    assert [r["model"] for r in document["results"]] == ["centre prior", "ELA"]
    assert all(r["metrics"]["pixel_auc"] is not None for r in document["results"])
    refused = subprocess.run([*command, "--model", "x.onnx"], capture_output=True, text=True,
                             env=tiny_env(), timeout=300)
    assert refused.returncode == 2 and "--baselines-only" in refused.stderr


def test_short_names_tell_paths_apart():
    from cflnet_sdk.training.evaluate import short_names

    assert short_names(["runs/a/best.st", "runs/b/best.st", "x.onnx"]) == {
        "runs/a/best.st": "a/best.st", "runs/b/best.st": "b/best.st", "x.onnx": "x.onnx"}


def test_unreadable_images_are_counted_not_fatal(tiny_checkpoint, tmp_path):
    from PIL import Image

    from cflnet_sdk.training.evaluate import evaluate

    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "manifest.jsonl").write_text('{"image": "ok.png"}\n{"image": "broken.png"}\n')
    result = evaluate(tiny_checkpoint, tmp_path, device="cpu")
    assert result.metrics["images"] == 1 and result.metrics["skipped_unreadable"] == 1


def test_metrics_per_manipulation_kind(tiny_checkpoint, forgeries):
    from cflnet_sdk.training.data.readers import open_dataset
    from cflnet_sdk.training.evaluate import evaluate, render_tables

    result = evaluate(tiny_checkpoint, forgeries[1], backend="torch", device="cpu")
    kinds = result.metrics["by_kind"]
    expected: dict[str, int] = {}
    for record in open_dataset(forgeries[1]):
        expected[record.kind] = expected.get(record.kind, 0) + 1
    assert {k: v["images"] for k, v in kinds.items()} == expected
    assert sum(v["images"] for v in kinds.values()) == result.metrics["images"]
    assert kinds["pristine"]["pixel_auc"] is None  # no tampered pixel: no pixel AUC
    assert any("per kind" in str(table.title) for table in render_tables([result]))


def test_cli_resave_jpeg_scores_each_dataset_again(tiny_checkpoint, forgeries, tmp_path):
    """``--resave-jpeg Q``: every dataset scored as it is and again after a JPEG re-save at Q,
    model and baselines alike, in rows named after the re-save."""
    command = [sys.executable, "-m", "cflnet_sdk", "evaluate", "--model", str(tiny_checkpoint),
               "--data", str(forgeries[0]), "--resave-jpeg", "40", "--device", "cpu",
               "--json", str(tmp_path / "r.json")]
    done = subprocess.run(command, capture_output=True, text=True, env=tiny_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    resaved = f"{forgeries[0]} (re-saved as JPEG q40)"
    assert [(r["baseline"], r["data"]) for r in results] == [
        (False, str(forgeries[0])), (False, resaved),
        (True, str(forgeries[0])), (True, str(forgeries[0])), (True, resaved), (True, resaved)]
    assert "re-saved as JPEG q40" in done.stdout
    original, again = results[0]["metrics"], results[1]["metrics"]
    assert again["images"] == original["images"] == 8
    assert again["pixel_auc"] != original["pixel_auc"]  # the model saw other pixels
    assert results[3]["metrics"]["pixel_auc"] != results[5]["metrics"]["pixel_auc"]  # ELA too
    refused = subprocess.run([*command[:-2], "--resave-jpeg", "0"], capture_output=True,
                             text=True, env=tiny_env(), timeout=300)
    assert refused.returncode == 2 and "--resave-jpeg" in refused.stderr


def test_resaved_as_jpeg(tmp_path):
    from PIL import Image

    from cflnet_sdk.images import load_image
    from cflnet_sdk.training.evaluate import resaved_as_jpeg

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = resaved_as_jpeg(tmp_path / "a.png", 30)
    assert isinstance(data, bytes) and data[:2] == b"\xff\xd8"
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.size == (56, 40)
    assert not np.array_equal(load_image(data), load_image(tmp_path / "a.png"))
    (tmp_path / "broken.png").write_bytes(b"not a png")  # left for the reader to report
    assert resaved_as_jpeg(tmp_path / "broken.png", 30) == tmp_path / "broken.png"


def test_cli_detection_of_forged_among_unedited_photos(tiny_checkpoint, forgeries, tmp_path):
    """Unedited photos (``"mask": null``) in their own dataset: each forged set is detected
    against each set's unedited photos at the model's decision, baselines beside it, per re-save;
    the numbers are those of the scores themselves."""
    from PIL import Image

    from cflnet_sdk.training.metrics import detection

    unedited = tmp_path / "unedited"
    unedited.mkdir()
    rng = np.random.default_rng(5)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (60, 84, 3), dtype=np.uint8)).save(
            unedited / f"u{i}.jpg", quality=90)
    (unedited / "manifest.jsonl").write_text("".join(
        json.dumps({"image": f"u{i}.jpg", "mask": None, "kind": "authentic"}) + "\n"
        for i in range(6)))
    command = [sys.executable, "-m", "cflnet_sdk", "evaluate", "--model", str(tiny_checkpoint),
               "--data", str(forgeries[1]), "--data", str(unedited), "--resave-jpeg", "75",
               "--device", "cpu", "--json", str(tmp_path / "r.json")]
    done = subprocess.run(command, capture_output=True, text=True, env=tiny_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Image-level detection" in done.stdout
    document = json.loads((tmp_path / "r.json").read_text())
    rows = document["detection"]
    pairs = {(r["model"], r["forged"], r["unedited"]) for r in rows}
    model, resaved = str(tiny_checkpoint), f"{unedited} (re-saved as JPEG q75)"
    assert (model, str(forgeries[1]), str(unedited)) in pairs
    assert (model, f"{forgeries[1]} (re-saved as JPEG q75)", resaved) in pairs
    assert ("ELA", str(forgeries[1]), str(unedited)) in pairs
    assert not any(r["forged"] == str(forgeries[1]) and r["unedited"] == resaved for r in rows)
    results = {(r["model"], r["data"]): r["metrics"] for r in document["results"]}
    alone = results[model, str(unedited)]
    assert alone["unedited_images"] == 6 and alone["false_alarm_rate"] is not None
    assert alone["unedited_mask_fraction"] is not None and alone["pixel_auc"] is None
    row = next(r for r in rows if (r["model"], r["forged"], r["unedited"]) ==
               (model, str(forgeries[1]), str(unedited)))
    assert row["false_alarm_rate"] == alone["false_alarm_rate"]
    assert row["unedited_images"] == 6 and row["forged_images"] == results[
        model, str(forgeries[1])]["tampered_images"]
    ela_row = next(r for r in rows if r["model"] == "ELA" and r["unedited"] == str(unedited))
    assert ela_row["false_alarm_rate"] is None and ela_row["detection_auc"] is not None
    assert set(detection([1.0], [0.0])) <= set(row)
