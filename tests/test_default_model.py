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
from cflnet_sdk.default_model import default_model_path
from cflnet_sdk.fileio import sha256_file
from tests.default_model_reference import REFERENCE, answer, reference_image

CARD = Path(__file__).parent.parent / "docs" / "model-card.md"
MODELS = Path(__file__).parent.parent / "cflnet_sdk" / "models"

pytestmark = pytest.mark.skipif(default_model_path() is None,
                                reason="this build ships no default model")


def test_model_card_names_the_shipped_files_by_sha256():
    card = CARD.read_text()
    for path in sorted(MODELS.glob("cflnet_default.*")):
        match = re.search(rf"{re.escape(path.name)}.*?sha256 `([0-9a-f]{{64}})`", card)
        assert match, f"docs/model-card.md does not give the sha256 of {path.name}"
        assert match.group(1) == sha256_file(path)


def test_shipped_files_fit_the_size_budget():
    assert sum(p.stat().st_size for p in MODELS.glob("cflnet_default.*")) <= 50e6


def test_default_localizer_gives_the_pinned_answer():
    localizer = Localizer()
    assert localizer.path == default_model_path() and localizer.backend_name == "onnxruntime"
    expected = json.loads(REFERENCE.read_text())
    got = answer(localizer)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-4), key


def test_checkpoint_and_onnx_agree():
    pytest.importorskip("torch")
    image = reference_image()
    with Localizer(MODELS / "cflnet_default.onnx") as exported, \
            Localizer(MODELS / "cflnet_default.safetensors") as checkpoint:
        assert exported.contract == checkpoint.contract  # one verdict, copy-move point included
        onnx = exported.predict(image).probability
        torch = checkpoint.predict(image).probability
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
    assert summary[0]["score"] == pytest.approx(json.loads(REFERENCE.read_text())["score"],
                                                abs=1e-4)


def test_lean_runtime_runs_the_default_model_without_torch():
    """What a Jetson install has (ONNX Runtime, no torch) gives the pinned answer too."""
    code = ("import sys, json; sys.modules['torch'] = None\n"
            "from cflnet_sdk import Localizer\n"
            "from tests.default_model_reference import answer\n"
            "print(json.dumps(answer(Localizer())))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, cwd=CARD.parent.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout)
    for key, value in json.loads(REFERENCE.read_text()).items():
        assert got[key] == pytest.approx(value, abs=1e-4), key
