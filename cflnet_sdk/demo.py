"""``cflnet demo``: generate forgeries, localise them, and show the result to a person.

Writes a contact sheet (image, ground truth, probability, predicted overlay per row) and the
metrics of the run. With no trained model shipped yet, it exports a freshly initialised
network and says so on the sheet: the demo then proves the pipeline, not the accuracy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cflnet_sdk.default_model import default_model_path
from cflnet_sdk.fileio import atomic_path, write_bytes_atomic

TILE = 192
HEADER = 40
COLUMNS = ("image", "ground truth", "tamper probability", "predicted mask")
# A perceptual dark-to-bright ramp (black, purple, red, orange, pale yellow) for probabilities.
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
                 dtype=np.float32)


@dataclass
class DemoResult:
    sheet: Path
    metrics: dict[str, Any]
    model: Path
    trained: bool


def heatmap(probability: np.ndarray) -> np.ndarray:
    """float HxW in [0, 1] -> HxWx3 uint8 through the ramp above."""
    position = np.clip(probability, 0, 1) * (len(_RAMP) - 1)
    low = np.minimum(position.astype(int), len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def untrained_model(folder: Path, size: int) -> Path:
    """Export a freshly initialised compact CFL-Net (needs the train and export extras)."""
    import torch

    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.onnx import export_onnx
    from cflnet_sdk.training.config import CFLNetConfig
    from cflnet_sdk.training.model import CFLNet

    torch.manual_seed(0)
    model = CFLNet(CFLNetConfig(backbone="resnet18", aspp_channels=64, embedding_dim=64)).eval()
    model.contract = Contract(height=size, width=size)
    return export_onnx(model, folder / "untrained.onnx", simplify=False)


def _tile(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).resize((TILE, TILE), Image.BILINEAR)


def _tint(rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = rgb.astype(np.float32)
    out[mask] = 0.5 * out[mask] + 0.5 * np.asarray(color, np.float32)
    return out.astype(np.uint8)


def contact_sheet(rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]],
                  title: str) -> Image.Image:
    """One row per sample: image, ground truth, probability heatmap, predicted overlay."""
    width = len(COLUMNS) * (TILE + 4) + 4 + 110
    sheet = Image.new("RGB", (width, HEADER + len(rows) * (TILE + 4) + 4), (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    draw.text((8, 4), title, fill=(235, 235, 240), font=font)
    for c, name in enumerate(COLUMNS):
        draw.text((114 + c * (TILE + 4), 22), name, fill=(170, 170, 178), font=font)
    for r, (image, truth, probability, predicted, label) in enumerate(rows):
        y = HEADER + r * (TILE + 4)
        draw.text((8, y + TILE // 2 - 8), label, fill=(235, 235, 240), font=font)
        tiles = (image, _tint(image, truth, (40, 220, 90)), heatmap(probability),
                 _tint(image, predicted, (255, 40, 40)))
        for c, tile in enumerate(tiles):
            sheet.paste(_tile(tile), (110 + c * (TILE + 4), y))
    return sheet


def run_demo(out: str | Path, count: int = 6, seed: int = 2026,
             model: str | Path | None = None) -> DemoResult:
    """Localise ``count`` fresh synthetic forgeries with ``model`` (default: the shipped one)."""
    from cflnet_sdk import Localizer
    from cflnet_sdk.training.data.synth import NATIVE_RECIPE, SynthConfig, SynthDataset
    from cflnet_sdk.training.metrics import MetricAccumulator

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    trained = model is not None or default_model_path() is not None
    model_path = Path(model) if model else default_model_path() or untrained_model(out, 256)
    localizer = Localizer(model_path)
    # Edits anywhere in the frame; a tile-mode model sees native crops, as it was trained on.
    native = NATIVE_RECIPE if localizer.contract.mode == "tile" else {}
    config = SynthConfig(seed=seed, height=288, width=384, pristine_rate=0.0, **native)
    samples = list(SynthDataset(config, length=count))
    predictions = localizer.predict_batch([s.image for s in samples], batch_size=count)
    metrics = MetricAccumulator(threshold=localizer.threshold)
    rows = []
    for sample, prediction in zip(samples, predictions, strict=True):
        truth = sample.mask if sample.mask is not None else np.zeros(prediction.size, bool)
        metrics.update(prediction.probability, truth, prediction.score)
        rows.append((sample.image, truth, prediction.probability, prediction.mask,
                     f"{sample.kind}\nscore {prediction.score:.2f}"))
    title = (f"CFL-Net demo, model {model_path.name} ({localizer.backend_name})" if trained else
             "UNTRAINED network (no trained default model ships yet): pipeline demo only")
    sheet_path = out / "contact_sheet.png"
    with atomic_path(sheet_path) as tmp:
        contact_sheet(rows, title).save(tmp, format="PNG")
    result = metrics.compute()
    write_bytes_atomic(out / "metrics.json", json.dumps(result, indent=2).encode())
    return DemoResult(sheet_path, result, model_path, trained)
