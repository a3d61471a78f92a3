"""Time the error-level channels of a 12 MP photo: the contract's ``error_level`` with its
qualities in threads, one after the other, and the plain definition (numpy's sum over the
channel axis), in one process, same photo, same load.

    python benchmarks/error_levels.py [--megapixels 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
from PIL import Image

import cflnet_sdk.contract
from cflnet_sdk.contract import Contract
from cflnet_sdk.tiling import TiledImage
from cflnet_sdk.training.data.sources import PhotoSource

QUALITIES = (75, 90, 95)  # the default model's


def plain_error_level(rgb: np.ndarray, quality: int) -> np.ndarray:
    """The definition as written: |image - JPEG re-save| summed over R, G, B, clipped at 255."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    resaved = np.asarray(Image.open(buffer).convert("RGB"))
    difference = np.abs(rgb.astype(np.int16) - resaved.astype(np.int16)).sum(axis=2)
    return np.minimum(difference, 255).astype(np.uint8)


def best_seconds(build: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        build()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    width = round((args.megapixels * 1e6 * 4 / 3) ** 0.5)
    height = round(width * 3 / 4)
    photo = Image.fromarray(PhotoSource().photo(0)).resize((width, height), Image.BICUBIC)
    rgb = np.asarray(photo)
    contract = Contract(mode="tile", ela_qualities=QUALITIES)
    shipped = cflnet_sdk.contract.error_level
    TiledImage(rgb, contract)  # warm-up
    tracemalloc.start()
    TiledImage(rgb, contract)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    threads = cflnet_sdk.contract.PARALLEL_ELA_PIXELS
    for name, function, parallel_from in (
            ("contract, qualities in threads", shipped, threads),
            ("contract, one quality after the other", shipped, width * height + 1),
            ("plain definition, in threads", plain_error_level, threads)):
        cflnet_sdk.contract.error_level = function
        cflnet_sdk.contract.PARALLEL_ELA_PIXELS = parallel_from
        seconds = best_seconds(lambda: TiledImage(rgb, contract), args.repeats)
        print(f"{width}x{height}, qualities {QUALITIES}, {name}: {seconds:.2f} s (best of "
              f"{args.repeats})")
    cflnet_sdk.contract.error_level = shipped
    cflnet_sdk.contract.PARALLEL_ELA_PIXELS = threads
    print(f"traced peak with the contract's: {peak / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
