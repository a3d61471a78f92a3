"""Localizer end to end on real files: sizes, modes, backends agreeing, batches, threads."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cflnet_sdk import ImageError, Localizer, Prediction
from cflnet_sdk.prediction import image_score
from tests.conftest import photo_array
from tests.test_images import write_odd_files

TOLERANCE = 1e-4


def onnx_model(checkpoint: Path, tmp_path_factory, name: str = "tiny", **options) -> Path:
    """Export ``checkpoint`` once per test session (cached on disk by name)."""
    from cflnet_sdk.export.onnx import export_onnx

    path = tmp_path_factory.getbasetemp() / "runtime-models" / f"{name}.onnx"
    if not path.exists():
        export_onnx(checkpoint, path, **options)
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    return onnx_model(tiny_checkpoint, tmp_path_factory)


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> dict[str, Path]:
    return write_odd_files(tmp_path_factory.mktemp("odd"))


@pytest.fixture(scope="module")
def torch_loc(tiny_checkpoint) -> Localizer:
    return Localizer(tiny_checkpoint)


@pytest.fixture(scope="module")
def ort_loc(tiny_onnx) -> Localizer:
    return Localizer(tiny_onnx, device="cpu")


def check_prediction(pred: Prediction, shape: tuple[int, int]) -> None:
    assert pred.probability.shape == shape and pred.probability.dtype == np.float32
    assert pred.probability.min() >= 0.0 and pred.probability.max() <= 1.0
    assert pred.mask.dtype == bool and pred.mask.shape == shape
    assert np.array_equal(pred.mask, pred.probability >= pred.threshold)
    assert 0.0 <= pred.score <= 1.0


def test_backends_are_chosen_by_suffix(torch_loc, ort_loc):
    assert (torch_loc.backend_name, torch_loc.device) == ("torch", "cpu")
    assert ort_loc.backend_name == "onnxruntime"
    assert ort_loc.providers == ["CPUExecutionProvider"] and ort_loc.device == "cpu"
    assert torch_loc.contract == ort_loc.contract and torch_loc.contract.size == (64, 64)


@pytest.mark.parametrize(("name", "shape"), [
    ("gray", (300, 451)), ("rgba", (300, 451)), ("gray16", (300, 451)), ("exif", (300, 451)),
    ("one", (1, 1)), ("wide", (3, 9020)), ("palette", (300, 451)), ("cmyk", (300, 451))])
def test_odd_files_come_back_at_original_size_and_backends_agree(torch_loc, ort_loc, odd_files,
                                                                 name, shape):
    a, b = torch_loc.predict(odd_files[name]), ort_loc.predict(odd_files[name])
    check_prediction(a, shape)
    check_prediction(b, shape)
    assert np.abs(a.probability - b.probability).max() <= TOLERANCE
    assert abs(a.score - b.score) <= TOLERANCE
    assert a.source == str(odd_files[name])


def test_every_input_kind_gives_the_same_prediction(ort_loc, photo_files):
    path = photo_files["png"]
    rgb = np.asarray(Image.open(path).convert("RGB"))
    results = [ort_loc.predict(path), ort_loc.predict(str(path)), ort_loc.predict(rgb),
               ort_loc.predict(Image.open(path))]
    for other in results[1:]:
        assert np.array_equal(other.probability, results[0].probability)
    gray = ort_loc.predict(rgb[..., 0])
    check_prediction(gray, rgb.shape[:2])


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_broken_files_raise_an_image_error_naming_the_file(ort_loc, photo_files, tmp_path, kind):
    path = tmp_path / f"{kind}.jpg"
    data = photo_files["jpeg"].read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 3],
                      "text": b"hello, not a picture"}[kind])
    with pytest.raises(ImageError, match=str(path)):
        ort_loc.predict(path)
    with pytest.raises(ImageError, match=str(path)):
        ort_loc.predict_batch([photo_files["png"], path], batch_size=2)


def test_predict_batch_keeps_order_and_calls_the_backend_once_per_batch(ort_loc, photo_files):
    images = [photo_files["jpeg"], photo_files["gray"], photo_array("coffee"),
              photo_files["png"], photo_array("rocket")[::3, ::2]]
    calls: list[int] = []
    backend = ort_loc.backend
    original = backend.run
    backend.run = lambda batch: (calls.append(len(batch)), original(batch))[1]
    try:
        batched = ort_loc.predict_batch(images, batch_size=2)
    finally:
        del backend.run
    assert calls == [2, 2, 1]
    for image, pred in zip(images, batched, strict=True):
        single = ort_loc.predict(image)
        assert pred.probability.shape == single.probability.shape
        assert np.abs(pred.probability - single.probability).max() <= TOLERANCE


def test_predict_iter_returns_errors_in_place(ort_loc, photo_files, tmp_path):
    bad = tmp_path / "zero.png"
    bad.write_bytes(b"")
    results = list(ort_loc.predict_iter([photo_files["jpeg"], bad, photo_files["gray"]],
                                        batch_size=2, errors="return"))
    assert isinstance(results[0], Prediction) and isinstance(results[2], Prediction)
    assert isinstance(results[1], ImageError) and str(bad) in str(results[1])


@pytest.mark.parametrize("which", ["onnxruntime", "torch"])
def test_threads_give_the_same_results_as_sequential_calls(torch_loc, ort_loc, which):
    loc = ort_loc if which == "onnxruntime" else torch_loc
    assert_threads_match_sequential(loc)


def assert_threads_match_sequential(loc: Localizer, threads: int = 8, calls: int = 25) -> None:
    """``threads`` threads x ``calls`` predictions equal the sequential results exactly."""
    images = [photo_array(n)[::4, ::4] for n in ("astronaut", "chelsea", "coffee", "rocket",
                                                  "camera")]
    expected = [loc.predict(image).probability for image in images]
    mismatches: list[tuple[int, int]] = []

    def worker(offset: int) -> None:
        for i in range(calls):
            k = (offset + i) % len(images)
            if not np.array_equal(loc.predict(images[k]).probability, expected[k]):
                mismatches.append((offset, i))

    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    assert not mismatches


def test_threshold_controls_the_mask_and_overlay(tiny_onnx, photo_files):
    everything = Localizer(tiny_onnx, threshold=0.0).predict(photo_files["jpeg"])
    nothing = Localizer(tiny_onnx, threshold=1.0).predict(photo_files["jpeg"])
    assert everything.mask.all() and everything.tampered
    original = np.asarray(Image.open(photo_files["jpeg"]).convert("RGB"))
    if not nothing.mask.any():  # nothing masked: the overlay is the photo itself
        assert np.array_equal(np.asarray(nothing.overlay()), original)
    tinted = np.asarray(everything.overlay(alpha=0.5)).astype(int)
    assert tinted.shape == original.shape
    assert (tinted[..., 0] >= original[..., 0] * 0.5 + 127 - 1).all()  # red pulled up
    assert (tinted[..., 1] <= original[..., 1] * 0.5 + 1).all()  # green halved
    with pytest.raises(Exception, match="threshold"):
        Localizer(tiny_onnx, threshold=1.5)


def test_overlay_contour_outlines_the_region():
    probability = np.zeros((20, 30), np.float32)
    probability[5:15, 10:20] = 0.9
    image = np.full((20, 30, 3), 100, np.uint8)
    pred = Prediction(probability=probability, score=image_score(probability), threshold=0.5,
                      image=image)
    plain, outlined = np.asarray(pred.overlay()), np.asarray(pred.overlay(contour=True))
    assert (plain[0, 0] == 100).all() and plain[10, 15, 0] > 100
    assert tuple(outlined[5, 12]) == (255, 0, 0) and tuple(outlined[10, 15]) == tuple(plain[10, 15])
    assert pred.to_dict()["tampered_fraction"] == pytest.approx(100 / 600, abs=1e-6)


def test_the_verdict_holds_the_score_to_the_decision_and_the_mask_follows_it():
    probability = np.zeros((20, 30), np.float32)
    probability[5:15, 10:20] = 0.7
    called = Prediction(probability=probability, score=0.7, threshold=0.5, decision_threshold=0.6)
    assert called.tampered and called.mask.sum() == 100
    untouched = Prediction(probability=probability, score=0.7, threshold=0.5,
                           decision_threshold=0.8)
    assert not untouched.tampered and not untouched.mask.any()  # no region in a clean verdict
    assert untouched.probability.max() == pytest.approx(0.7)  # the map itself is kept
    assert untouched.to_dict()["decision_threshold"] == 0.8
    legacy = Prediction(probability=probability, score=0.7, threshold=0.5)
    assert legacy.decision == 0.5 and legacy.tampered  # older models: the mask threshold


def test_image_score_is_the_mean_of_the_top_percent():
    probability = np.zeros((100, 100), np.float32)
    probability.flat[:100] = 0.8  # exactly 1% of the pixels
    assert image_score(probability) == pytest.approx(0.8)
    probability.flat[0] = 1.0  # one noisy pixel barely moves it
    assert image_score(probability) == pytest.approx(0.802)
    assert image_score(np.full((1, 1), 0.3, np.float32)) == pytest.approx(0.3)


def test_dynamic_shape_models_run_at_the_contract_size(tiny_checkpoint, tmp_path_factory,
                                                      ort_loc, photo_files):
    path = onnx_model(tiny_checkpoint, tmp_path_factory, "tiny-dynamic-shape",
                      dynamic_shape=True, simplify=False)
    loc = Localizer(path)
    assert loc.contract.size == (64, 64)
    a, b = loc.predict(photo_files["jpeg"]), ort_loc.predict(photo_files["jpeg"])
    assert np.abs(a.probability - b.probability).max() <= TOLERANCE


BLOCKED = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import json
from cflnet_sdk import BackendUnavailableError, Localizer
loc = Localizer(sys.argv[1])
pred = loc.predict(sys.argv[2])
batch = loc.predict_batch([sys.argv[2]] * 3, batch_size=2)
try:
    Localizer(sys.argv[3])
    engine = "opened"
except BackendUnavailableError as exc:
    engine = str(exc)
from cflnet_sdk.cli import app
print(json.dumps({"shape": list(pred.probability.shape), "score": pred.score,
                  "batch": len(batch), "engine": engine, "backend": loc.backend_name,
                  "torch": [m for m, v in sys.modules.items()
                            if m.split(".")[0] == "torch" and v is not None]}))
"""


def test_onnxruntime_and_tensorrt_paths_never_import_torch(tiny_onnx, ort_loc, photo_files,
                                                           tmp_path):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.engine_file import write_engine

    engine = write_engine(tmp_path / "model.engine", b"plan bytes",
                          {"contract": json.loads(Contract(height=64, width=64).to_json())})
    out = subprocess.run([sys.executable, "-c", BLOCKED, str(tiny_onnx),
                          str(photo_files["jpeg"]), str(engine)],
                         capture_output=True, text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["backend"] == "onnxruntime" and result["batch"] == 3
    assert result["shape"] == [512, 512] and result["torch"] == []
    assert result["score"] == pytest.approx(ort_loc.predict(photo_files["jpeg"]).score, abs=1e-6)
    try:
        import tensorrt  # noqa: F401
    except ImportError:  # here: the engine path reached the tensorrt import without torch
        assert "tensorrt" in result["engine"]
