"""Where the time of one ``predict`` goes, stage by stage: ``cflnet benchmark --profile PHOTO``.

``Localizer.predict`` is ``prepare`` (decode, input channels; the copy-move analysis starts
there), ``infer`` (tiles cut and normalised, network calls, blending) and ``finish`` (full-size
map and score, copy-move evidence, fusion). Each stage is timed on its own, one after the other
through the Localizer's public parts, so no stage shares the cores with another; the whole
``predict`` is timed beside them, and it takes less than their sum where the copy-move analysis
overlaps the network.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from cflnet_sdk.errors import ConfigError

T = TypeVar("T")


@dataclass
class Profile:
    """Median milliseconds per stage of one photo's ``predict``, and of the whole call."""

    photo: str
    width: int
    height: int
    units: int  # model inputs: tiles, or 1 in resize mode
    stages: dict[str, float] = field(default_factory=dict)
    total: float = 0.0  # median ``predict`` end to end
    peak_rss_mb: float = 0.0

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {"photo": self.photo, "width": self.width, "height": self.height,
                "units": self.units, "stages_ms": self.stages, "predict_ms": self.total,
                "sum_of_stages_ms": sum(self.stages.values()), "peak_rss_mb": self.peak_rss_mb}

    def format(self) -> str:
        """A table: stage, milliseconds, share of the summed stages."""
        summed = sum(self.stages.values()) or 1.0
        lines = [f"{Path(self.photo).name}: {self.width}x{self.height} "
                 f"({self.megapixels:.1f} MP), {self.units} model input(s)",
                 f"{'stage':<22}{'ms':>10}{'share':>8}"]
        lines += [f"{name:<22}{ms:>10,.0f}{ms / summed:>8.0%}" for name, ms in self.stages.items()]
        lines.append(f"{'sum of stages':<22}{summed:>10,.0f}")
        lines.append(f"{'predict (measured)':<22}{self.total:>10,.0f}   "
                     f"{self.total / 1000 / self.megapixels:.2f} s/MP, "
                     f"peak RSS {self.peak_rss_mb:,.0f} MB")
        return "\n".join(lines)


class Stopwatch:
    """Adds the time of each timed call to its stage's bucket for the current round."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, float]] = []

    def new_round(self) -> None:
        self.rounds.append(defaultdict(float))

    def time(self, stage: str, call: Callable[..., T], *args: Any) -> T:
        start = time.perf_counter()
        result = call(*args)
        self.rounds[-1][stage] += (time.perf_counter() - start) * 1000.0
        return result

    def medians(self) -> dict[str, float]:
        names = list(self.rounds[0])
        return {name: float(np.median([r[name] for r in self.rounds])) for name in names}


def profile_round(localizer: Any, photo: Path, watch: Stopwatch) -> tuple[int, int, int]:
    """One ``predict`` of ``photo``, every stage timed into ``watch``; returns the photo's
    height and width and how many model inputs it took."""
    from cflnet_sdk.images import load_image
    from cflnet_sdk.prediction import Prediction

    watch.new_round()
    rgb = watch.time("decode", load_image, photo)
    inputs = watch.time("input channels", localizer.model_inputs, rgb)
    step = localizer.tile_batch if localizer.mode == "tile" else 1
    for start in range(0, len(inputs), step):
        indices = range(start, min(start + step, len(inputs)))
        batch = watch.time("tiles", _stacked_inputs, inputs, indices)
        outputs = watch.time("network", localizer.run, batch)
        for index, probability in zip(indices, outputs, strict=True):
            watch.time("blend", inputs.add, index, probability)
    probability, score = watch.time("map and score", inputs.result)
    fusion = localizer.fusion
    if fusion is not None:
        found = watch.time("copy-move", fusion.detector.analyse, rgb)
        network = Prediction(probability, score, localizer.threshold,
                             decision_threshold=localizer.decision_threshold)
        watch.time("fusion", fusion, network, found)
    return (*rgb.shape[:2], len(inputs))


def _stacked_inputs(inputs: Any, indices: range) -> np.ndarray:
    return np.stack([inputs.input(index) for index in indices])


def profile_photo(localizer: Any, photo: Path, warmup: int = 1, iterations: int = 3) -> Profile:
    """Median stage times and ``predict`` time of ``photo`` (rounds interleaved with predicts)."""
    from cflnet_sdk.runtime.benchmark import peak_rss_mb, reset_peak_rss

    if iterations < 1:
        raise ConfigError(f"iterations must be at least 1, got {iterations}")
    for _ in range(warmup):
        localizer.predict(photo)
    watch, totals, peaks = Stopwatch(), [], []
    for _ in range(iterations):
        height, width, units = profile_round(localizer, photo, watch)
        reset_peak_rss()
        start = time.perf_counter()
        localizer.predict(photo)
        totals.append((time.perf_counter() - start) * 1000.0)
        peaks.append(peak_rss_mb())
    return Profile(photo=str(photo), width=width, height=height, units=units,
                   stages=watch.medians(), total=float(np.median(totals)),
                   peak_rss_mb=max(peaks))
