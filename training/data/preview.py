"""A contact sheet of synthetic samples with their mask outlines, for a person to eyeball."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cflnet_sdk.images import load_image
from cflnet_sdk.training.data.shapes import outline

TILE = 200
LABEL = 32
COLUMNS = 6
OUTLINE_RGB = np.array([255, 40, 40], dtype=np.float32)
KIND_RGB = {"splice": (255, 140, 60), "copy-move": (90, 200, 255), "removal": (180, 120, 255),
            "enhance": (120, 230, 120), "pristine": (200, 200, 200)}


def _tile(image: np.ndarray, mask: np.ndarray | None) -> Image.Image:
    """The image with the tampered region tinted and outlined in red."""
    pixels = image.astype(np.float32)
    if mask is not None and mask.any():
        pixels[mask] = 0.85 * pixels[mask] + 0.15 * OUTLINE_RGB
        border = outline(mask, width=max(1, image.shape[0] // 128))
        pixels[border] = OUTLINE_RGB
    tile = Image.fromarray(pixels.astype(np.uint8))
    tile.thumbnail((TILE, TILE), Image.BILINEAR)
    return tile


def _caption(line: dict[str, Any]) -> tuple[str, str]:
    """Two short lines that fit under a tile: what was done, then the global post-processing."""
    params = line.get("parameters", {})
    post = "+".join(step["op"] for step in params.get("post", []))
    detail = ", ".join(p for p in (params.get("op", ""), f"post {post}" if post else "") if p)
    return f"#{line['index']} {line['kind']}", detail


def contact_sheet(out: Path, lines: Sequence[dict[str, Any]]) -> Image.Image:
    """Tiles of ``lines`` (manifest entries relative to ``out``), captioned with kind and ops."""
    rows = max(1, -(-len(lines) // COLUMNS))
    sheet = Image.new("RGB", (COLUMNS * (TILE + 4) + 4, rows * (TILE + LABEL + 4) + 4),
                      (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font, small = ImageFont.load_default(size=13), ImageFont.load_default(size=11)
    for n, line in enumerate(lines):
        image = load_image(out / line["image"])
        mask = None if line["mask"] is None else load_image(out / line["mask"])[..., 0] > 127
        x, y = 4 + (n % COLUMNS) * (TILE + 4), 4 + (n // COLUMNS) * (TILE + LABEL + 4)
        sheet.paste(_tile(image, mask), (x, y))
        title, detail = _caption(line)
        draw.text((x + 3, y + TILE + 2), title, fill=KIND_RGB.get(line["kind"]), font=font)
        draw.text((x + 3, y + TILE + 17), detail, fill=(170, 170, 178), font=small)
    return sheet
