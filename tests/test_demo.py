"""`cflnet demo` runs the whole job end to end and writes what a person looks at."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from cflnet_sdk.demo import heatmap

pytest.importorskip("torch")


def test_demo_cli_writes_contact_sheet_and_metrics(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "cflnet_sdk", "demo", "--out", str(out),
                             "--count", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "contact sheet" in result.stdout
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.width > 700 and sheet.height > 2 * 192
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 2
    assert metrics["pixel_auc"] is None or 0.0 <= metrics["pixel_auc"] <= 1.0


def test_heatmap_ramp_is_monotonic_in_brightness():
    import numpy as np

    ramp = heatmap(np.linspace(0, 1, 11, dtype=np.float32)[None, :])[0].astype(int).sum(axis=1)
    assert (np.diff(ramp) > 0).all()
