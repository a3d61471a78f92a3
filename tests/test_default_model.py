"""The shipped default model: the file the model card describes, and stable answers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cflnet_sdk import Localizer
from cflnet_sdk.default_model import (
    DEFAULT_CPU_MODEL,
    DEFAULT_MODEL,
    cpu_has_int8_dot_product,
    default_model_path,
)
from cflnet_sdk.fileio import sha256_file
from tests.default_model_reference import answer, pinned, reference_image

CARD = Path(__file__).parent.parent / "docs" / "model-card.md"
MODELS = Path(__file__).parent.parent / "cflnet_sdk" / "models"

pytestmark = pytest.mark.skipif(default_model_path() is None,
                                reason="this build ships no default model")


def test_model_card_names_the_shipped_files_by_sha256():
    card = CARD.read_text()
    for path in sorted(MODELS.glob("cflnet_default*")):
        match = re.search(rf"{re.escape(path.name)}.*?sha256 `([0-9a-f]{{64}})`", card)
        assert match, f"docs/model-card.md does not give the sha256 of {path.name}"
        assert match.group(1) == sha256_file(path)


def test_shipped_files_fit_the_size_budget():
    # float32 ONNX (weights stored as float16), INT8 CPU ONNX, half-precision checkpoint
    assert sum(p.stat().st_size for p in MODELS.glob("cflnet_default*")) <= 64e6


# INT8 sums are exact, but requantisation kernels differ between CPUs: a looser pin.
TOLERANCE = {DEFAULT_MODEL.name: 1e-4, DEFAULT_CPU_MODEL.name: 5e-3}


def assert_pinned(got: dict[str, float], path) -> None:
    for key, value in pinned(path).items():
        assert got[key] == pytest.approx(value, abs=TOLERANCE[path.name]), (path.name, key)


@pytest.mark.parametrize("path", [DEFAULT_MODEL, DEFAULT_CPU_MODEL], ids=lambda p: p.name)
def test_each_shipped_file_gives_its_pinned_answer(path):
    if not path.is_file():
        pytest.skip(f"this build ships no {path.name}")
    if path == DEFAULT_CPU_MODEL and not cpu_has_int8_dot_product():
        pytest.skip("this CPU has no VNNI/AMX: its u8s8 INT8 results may saturate, and "
                    "Localizer() runs the float32 file here")
    assert_pinned(answer(Localizer(path, device="cpu")), path)


def test_default_localizer_runs_the_file_for_its_device(monkeypatch):
    from cflnet_sdk import default_model

    localizer = Localizer()
    assert localizer.path == default_model_path() and localizer.backend_name == "onnxruntime"
    assert default_model_path("cuda:0") == DEFAULT_MODEL
    for has_int8, expected in ((False, DEFAULT_MODEL), (True, DEFAULT_CPU_MODEL)):
        monkeypatch.setattr(default_model, "cpu_has_int8_dot_product", lambda v=has_int8: v)
        assert default_model_path("cpu") == (expected if DEFAULT_CPU_MODEL.is_file()
                                             else DEFAULT_MODEL)


def test_checkpoint_and_onnx_agree():
    pytest.importorskip("torch")
    image = reference_image()
    onnx = Localizer(MODELS / "cflnet_default.onnx").predict(image).probability
    torch = Localizer(MODELS / "cflnet_default.safetensors").predict(image).probability
    # both store float16 weights, rounded on different paths (the ONNX after folding batch
    # norm into the convolutions), so they agree to float16 precision, not bit for bit
    assert np.abs(onnx - torch).max() < 1e-2
    assert ((onnx >= 0.5) == (torch >= 0.5)).mean() > 0.99


def test_cflnet_predict_without_model_uses_the_default(tmp_path):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.fromarray(reference_image()).save(image)
    done = subprocess.run([sys.executable, "-m", "cflnet_sdk", "predict", str(image), "--out",
                           str(tmp_path / "out"), "--no-progress"], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = [json.loads(line) for line in
               (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    path = default_model_path()
    assert summary[0]["score"] == pytest.approx(pinned(path)["score"], abs=TOLERANCE[path.name])


def test_lean_runtime_runs_the_default_model_without_torch():
    """What a Jetson install has (ONNX Runtime, no torch) gives the pinned answer too."""
    code = ("import sys, json; sys.modules['torch'] = None\n"
            "from cflnet_sdk import Localizer\n"
            "from tests.default_model_reference import answer\n"
            "print(json.dumps(answer(Localizer())))")
    path = default_model_path()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=CARD.parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_pinned(json.loads(done.stdout), path)
