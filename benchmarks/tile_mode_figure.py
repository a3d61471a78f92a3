"""The picture in docs/runtime.md: one forged photo's probability map in resize and tile mode.

    python benchmarks/tile_mode_figure.py --photos ../shared/photos/kodak24 -o docs/tile-mode.png

The forgery is made here from two Kodak PhotoCD photos (released for unrestricted use): the
host saved as JPEG quality 85, a region of a second photo saved at quality 60 pasted off the
8x8 grid, the composite saved at quality 90, as a spliced camera JPEG would be. Prints each
mode's per-image pixel AUC on it.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PANEL_WIDTH = 384


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def forgery(photos: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB, mask) of a splice: kodim05 into kodim23, with other compression histories."""
    host = jpeg(np.asarray(Image.open(photos / "kodim23.png").convert("RGB")), 85)
    donor = jpeg(np.asarray(Image.open(photos / "kodim05.png").convert("RGB")), 60)
    mask = np.zeros(host.shape[:2], bool)
    top, left, height, width = 45, 453, 170, 230  # off the 8x8 grid and off the centre
    mask[top:top + height, left:left + width] = True
    spliced = host.copy()
    spliced[mask] = donor[100:100 + height, 200:200 + width].reshape(-1, 3)
    return jpeg(spliced, 90), mask


def panel(array: np.ndarray, label: str) -> Image.Image:
    image = Image.fromarray(array if array.ndim == 3 else
                            np.rint(np.clip(array, 0, 1) * 255).astype(np.uint8))
    height = round(image.height * PANEL_WIDTH / image.width)
    image = image.convert("RGB").resize((PANEL_WIDTH, height), Image.BILINEAR)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, PANEL_WIDTH, 16), fill=(0, 0, 0))
    draw.text((4, 2), label, fill=(255, 255, 255))
    return image


def main() -> None:
    from sklearn.metrics import roc_auc_score

    from cflnet_sdk import Localizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="the kodak24 folder")
    parser.add_argument("--model", type=Path, default=None, help="default: the shipped model")
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/tile-mode.png"))
    args = parser.parse_args()
    rgb, mask = forgery(args.photos)
    panels = [panel(rgb, "spliced photo (768x512 JPEG)"), panel(mask.astype(float), "truth")]
    for mode in ("resize", "tile"):
        localizer = Localizer(args.model, mode=mode)
        probability = localizer.predict(rgb).probability
        auc = roc_auc_score(mask.ravel(), probability.ravel())
        print(f"{mode}: pixel AUC {auc:.3f}, probability {probability.min():.3f}.."
              f"{probability.max():.3f}")
        size = "x".join(map(str, localizer.contract.size))
        what = f"resized to {size}" if mode == "resize" else f"{size} tiles"
        panels.append(panel(probability, f"{mode} mode ({what}): AUC {auc:.2f}"))
    sheet = Image.new("RGB", (PANEL_WIDTH * 2, panels[0].height * 2), (255, 255, 255))
    for index, image in enumerate(panels):
        sheet.paste(image, (PANEL_WIDTH * (index % 2), image.height * (index // 2)))
    sheet.save(args.output, optimize=True)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
