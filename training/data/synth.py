"""Synthetic forgeries: deterministic per (seed, index), written to disk or streamed.

Sample ``i`` of seed ``s`` draws everything from ``SeedSequence(s, spawn_key=(i,))``, so it is
the same bytes whether produced first or last, by one worker process or eight, on disk or on the
fly inside a DataLoader worker. Torch-free on purpose.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from cflnet_sdk.errors import DataError
from cflnet_sdk.fileio import write_bytes_atomic
from cflnet_sdk.training.data import ops
from cflnet_sdk.training.data.manipulations import AREA, KINDS, MANIPULATIONS, Manipulated
from cflnet_sdk.training.data.sources import SPLITS, PhotoSource, native_view, random_view

POST_OPS = ("jpeg", "resize", "blur", "noise")
# What a tile-mode model trains on (``cflnet train --mode tile``, ``cflnet synth --native``):
# native crops, nine hosts in ten JPEG-compressed before the edit and donors mostly shrunk (so
# a splice, as in real ones, carries a fresher compression history than its host:
# docs/experiments.md, "Compression histories"), half the forgeries saved as JPEG after it,
# fewer hidden by global operations than by default.
NATIVE_RECIPE: dict[str, Any] = {"native": True, "host_jpeg_rate": 0.9, "save_jpeg_rate": 0.5,
                                 "post_rate": 0.3, "donor_scale": (0.5, 1.2)}
MANIFEST = "manifest.jsonl"
CONFIG_FILE = "synth_config.json"


@dataclass(frozen=True)
class SynthConfig:
    """Everything that decides the samples; saved next to the manifest for regeneration.

    Edits land anywhere (the border may cut them), one to ``max_regions`` per image, each
    covering a share of the image within ``area``, so where an edit sits tells nothing.
    ``native``: the host is a crop of a photo's own pixels on its JPEG grid (what a tile-mode
    model must learn from), JPEG-compressed on that grid before the edit for a share
    ``host_jpeg_rate`` of samples (as a photo downloaded or shared before it is edited), and
    the splice donor is resampled by a random scale within ``donor_scale`` and, for a share
    ``donor_jpeg_rate``, JPEG-compressed at another quality, so it carries another history;
    otherwise views are rescaled crops, as for resize-mode models. ``save_jpeg_rate``: share
    of samples saved as JPEG at the end (quality from ``jpeg_quality``), as most forgeries
    are; the rest stay lossless. ``split`` and ``exclude`` pick the photos (see
    ``PhotoSource``).
    """

    seed: int = 0
    height: int = 256
    width: int = 256
    kinds: tuple[str, ...] = KINDS
    pristine_rate: float = 0.1
    post_rate: float = 0.5
    post_ops: tuple[str, ...] = POST_OPS
    jpeg_quality: tuple[int, int] = (60, 95)
    sources: tuple[str, ...] = ()
    image_format: Literal["png", "jpeg"] = "png"
    native: bool = False
    split: str = "all"
    exclude: tuple[str, ...] = ()
    max_regions: int = 3
    area: tuple[float, float] = AREA
    save_jpeg_rate: float = 0.0
    host_jpeg_rate: float = 0.0
    donor_scale: tuple[float, float] = (0.5, 2.0)
    donor_jpeg_rate: float = 0.5

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(KINDS)
        if unknown or not self.kinds:
            raise DataError(f"unknown manipulation kinds {sorted(unknown)}; choose from "
                            f"{', '.join(KINDS)}")
        if set(self.post_ops) - set(POST_OPS):
            raise DataError(f"unknown post-processing {sorted(set(self.post_ops) - set(POST_OPS))};"
                            f" choose from {', '.join(POST_OPS)}")
        if not all(0.0 <= r <= 1.0 for r in (self.pristine_rate, self.post_rate,
                                             self.save_jpeg_rate, self.host_jpeg_rate,
                                             self.donor_jpeg_rate)):
            raise DataError("pristine_rate, post_rate, save_jpeg_rate, host_jpeg_rate and "
                            "donor_jpeg_rate must be in [0, 1]")
        if not 0.0 < self.donor_scale[0] <= self.donor_scale[1]:
            raise DataError(f"donor_scale {self.donor_scale} must be a positive LOW-HIGH range")
        if self.split not in SPLITS:
            raise DataError(f"unknown photo split {self.split!r}; choose {', '.join(SPLITS)}")
        if self.max_regions < 1 or not 0.0 < self.area[0] <= self.area[1] <= 1.0:
            raise DataError(f"max_regions {self.max_regions} must be >= 1 and area "
                            f"{self.area} a range within (0, 1]")
        if min(self.height, self.width) < 32:
            raise DataError(f"size {self.height}x{self.width} is too small; use at least 32x32")
        low, high = self.jpeg_quality
        if not 1 <= low <= high <= 100:
            raise DataError(f"jpeg_quality {self.jpeg_quality} must be LOW-HIGH within 1-100")
        if self.image_format not in ("png", "jpeg"):
            raise DataError(f"image_format {self.image_format!r} is not 'png' or 'jpeg'")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    def photos(self) -> PhotoSource:
        """The photos these samples are made from."""
        return PhotoSource(self.sources, self.split, self.exclude)

    @classmethod
    def from_json(cls, text: str) -> SynthConfig:
        data = json.loads(text)
        for key in ("kinds", "post_ops", "jpeg_quality", "sources", "exclude", "area",
                    "donor_scale"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@dataclass
class Sample:
    """One synthetic sample. ``mask`` is None for a pristine (unedited) image."""

    index: int
    image: np.ndarray
    mask: np.ndarray | None
    kind: str
    params: dict[str, Any] = field(default_factory=dict)


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The generator of sample ``index``: independent of every other sample and of scheduling.

    ``stream`` 0 draws the edit, 1 the global post-processing, so changing the post-processing
    settings never changes which edit a sample gets.
    """
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, stream)))


def _quality(rng: np.random.Generator, config: SynthConfig) -> int:
    return int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))


def _post_process(image: np.ndarray, rng: np.random.Generator, config: SynthConfig,
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Global trace-hiding operations: the mask is unchanged, the local traces get weaker."""
    if not config.post_ops or rng.random() >= config.post_rate:
        return image, []
    count = int(rng.integers(1, min(2, len(config.post_ops)) + 1))
    chosen = rng.choice(len(config.post_ops), size=count, replace=False)
    applied = []
    for name in sorted(config.post_ops[i] for i in chosen):
        if name == "jpeg":
            quality = _quality(rng, config)
            image, step = ops.jpeg_roundtrip(image, quality), {"op": name, "quality": quality}
        elif name == "resize":
            scale = float(rng.uniform(0.5, 0.9))
            image, step = ops.resample_roundtrip(image, scale), {"op": name,
                                                                "scale": round(scale, 3)}
        elif name == "blur":
            sigma = float(rng.uniform(0.3, 1.0))
            image, step = ops.gaussian_blur(image, sigma), {"op": name, "sigma": round(sigma, 3)}
        else:
            sigma = float(rng.uniform(1.0, 4.0))
            image, step = ops.add_noise(image, sigma, rng), {"op": name, "sigma": round(sigma, 3)}
        applied.append(step)
    return image, applied


def _save(image: np.ndarray, rng: np.random.Generator, config: SynthConfig,
          ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The forger's final save: JPEG at a random quality, or lossless."""
    if rng.random() >= config.save_jpeg_rate:
        return image, []
    quality = _quality(rng, config)
    return ops.jpeg_roundtrip(image, quality), [{"op": "save-jpeg", "quality": quality}]


def _views(config: SynthConfig, source: PhotoSource, rng: np.random.Generator, photo: int,
           params: dict[str, Any]) -> tuple[np.ndarray, Any]:
    """The host view of ``photo`` and a callable drawing a donor view of another photo; the
    JPEG qualities they are compressed at before the edit go into ``params`` (``host_jpeg``,
    ``donor_jpeg``), so a set's manifest tells each sample's compression history."""
    size = (config.height, config.width)
    if not config.native:
        view = random_view(source.photo(photo), rng, *size)
        return view, lambda other: random_view(source.photo(other), rng, *size)

    def donor(other: int) -> np.ndarray:
        view = random_view(source.photo(other), rng, *size, scale_range=config.donor_scale)
        if rng.random() < config.donor_jpeg_rate:
            params["donor_jpeg"] = _quality(rng, config)
            view = ops.jpeg_roundtrip(view, params["donor_jpeg"])
        return view

    view = native_view(source.photo(photo), rng, *size)
    if rng.random() < config.host_jpeg_rate:
        params["host_jpeg"] = _quality(rng, config)
        view = ops.jpeg_roundtrip(view, params["host_jpeg"])
    return view, donor


def manipulate(config: SynthConfig, index: int, source: PhotoSource | None = None,
               ) -> tuple[np.ndarray, Manipulated | None, dict[str, Any]]:
    """Sample ``index`` before global post-processing: (original view, edit or None, params).

    Exposed so tests and users can see that an edit changes pixels only inside its mask.
    """
    source = source or config.photos()
    rng = sample_rng(config.seed, index)
    photo = int(rng.integers(len(source)))
    params: dict[str, Any] = {"photo": source.names[photo]}
    view, draw_donor = _views(config, source, rng, photo, params)
    if rng.random() < config.pristine_rate:
        return view, None, params
    kind = str(config.kinds[int(rng.integers(len(config.kinds)))])
    count = int(rng.integers(1, config.max_regions + 1))
    area = (config.area[0], max(config.area[0], config.area[1] / count))
    donor = None
    if kind == "splice":
        # A different photo when there is one: a splice from the same photo is a copy-move.
        other = (photo + 1 + int(rng.integers(max(1, len(source) - 1)))) % len(source)
        donor = draw_donor(other)
        params["donor"] = source.names[other]
    image, mask, regions = view, np.zeros(view.shape[:2], dtype=bool), []
    for _ in range(count):
        edited = MANIPULATIONS[kind](image, rng, donor=donor, area=area)
        image, mask = edited.image, mask | edited.mask
        regions.append(edited.params)
    params = {"kind": kind, **params, "regions": regions}
    return view, Manipulated(image, mask, params), params


def generate_sample(config: SynthConfig, index: int, source: PhotoSource | None = None,
                    ) -> Sample:
    """Sample ``index`` of ``config``, post-processing included."""
    view, edited, params = manipulate(config, index, source)
    rng = sample_rng(config.seed, index, stream=1)
    image = view if edited is None else edited.image
    image, post = _post_process(image, rng, config)
    image, saved = _save(image, rng, config)
    post += saved
    kind = "pristine" if edited is None else params["kind"]
    return Sample(index, image, None if edited is None else edited.mask, kind,
                  {**params, "kind": kind, "post": post})


class SynthDataset:
    """A map-style, on-the-fly dataset of ``length`` synthetic samples (torch-free).

    ``load(i)`` returns ``(rgb, mask)`` like ``ForgeryDataset.load``; ``offset`` shifts the
    indices so each epoch (or each split) can see fresh samples of the same seed.
    """

    def __init__(self, config: SynthConfig | None = None, length: int = 10_000,
                 offset: int = 0) -> None:
        self.config = config or SynthConfig()
        self.length, self.offset = length, offset
        self._source: PhotoSource | None = None

    def __len__(self) -> int:
        return self.length

    def sample(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(f"sample {index} outside 0..{self.length - 1}")
        if self._source is None:
            self._source = self.config.photos()
        return generate_sample(self.config, self.offset + index, self._source)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        sample = self.sample(index)
        mask = sample.mask if sample.mask is not None else np.zeros(sample.image.shape[:2], bool)
        return sample.image, mask

    def __iter__(self) -> Iterator[Sample]:
        return (self.sample(i) for i in range(self.length))


# -- writing to disk ------------------------------------------------------------------------
def _encode(image: Image.Image, fmt: str) -> bytes:
    import io

    buffer = io.BytesIO()
    if fmt == "jpeg":
        image.save(buffer, format="JPEG", quality=95)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def write_sample(sample: Sample, out: Path, config: SynthConfig) -> dict[str, Any]:
    """Write one sample's image and mask; return its manifest line."""
    suffix = "jpg" if config.image_format == "jpeg" else "png"
    image_name = f"images/{sample.index:06d}.{suffix}"
    image = Image.fromarray(sample.image)
    write_bytes_atomic(out / image_name, _encode(image, config.image_format))
    mask_name = None
    if sample.mask is not None:
        mask_name = f"masks/{sample.index:06d}.png"
        mask = Image.fromarray(sample.mask.astype(np.uint8) * 255)
        write_bytes_atomic(out / mask_name, _encode(mask, "png"))
    return {"image": image_name, "mask": mask_name, "kind": sample.kind, "index": sample.index,
            "seed": config.seed, "parameters": sample.params}


_WORKER: dict[str, Any] = {}


def _init_worker(config: SynthConfig, out: str) -> None:
    _WORKER.update(config=config, out=Path(out),
                   source=config.photos())


def _work(index: int) -> dict[str, Any]:
    config, out, source = _WORKER["config"], _WORKER["out"], _WORKER["source"]
    return write_sample(generate_sample(config, index, source), out, config)


@dataclass
class SynthReport:
    """What ``generate`` wrote and how fast."""

    out: Path
    count: int
    seconds: float
    manifest: Path
    preview: Path | None = None
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else float("inf")


def generate(config: SynthConfig, out: str | Path, count: int, workers: int = 1,
             preview: bool = False) -> SynthReport:
    """Write ``count`` samples, ``manifest.jsonl`` and the config to ``out``."""
    if count < 1:
        raise DataError(f"count {count} must be at least 1")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    config.photos().names  # noqa: B018 - fail early, before forking
    start = time.perf_counter()
    if workers <= 1:
        _init_worker(config, str(out))
        lines = [_work(i) for i in range(count)]
    else:
        with multiprocessing.get_context().Pool(workers, _init_worker, (config, str(out))) as pool:
            lines = list(pool.imap(_work, range(count), chunksize=4))
    manifest = out / MANIFEST
    write_bytes_atomic(manifest, "".join(json.dumps(line, sort_keys=True) + "\n"
                                   for line in lines).encode())
    write_bytes_atomic(out / CONFIG_FILE, config.to_json().encode())
    seconds = time.perf_counter() - start
    kinds: dict[str, int] = {}
    for line in lines:
        kinds[line["kind"]] = kinds.get(line["kind"], 0) + 1
    report = SynthReport(out, count, seconds, manifest, kinds=kinds)
    if preview:
        from cflnet_sdk.training.data.preview import contact_sheet

        report.preview = out / "preview.png"
        write_bytes_atomic(report.preview, _encode(contact_sheet(out, lines[:24]), "png"))
    return report


def parse_size(text: str) -> tuple[int, int]:
    """``"256"`` -> (256, 256); ``"192x256"`` -> (192, 256) as height x width."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError as exc:
        raise DataError(f"size {text!r} is not N or HxW (e.g. 256 or 192x256)") from exc
    if len(parts) == 1:
        return parts[0], parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise DataError(f"size {text!r} is not N or HxW (e.g. 256 or 192x256)")


def parse_list(text: str | Sequence[str]) -> tuple[str, ...]:
    """Comma-separated CLI values (``"splice,removal"``) as a tuple."""
    items = [text] if isinstance(text, str) else list(text)
    return tuple(p.strip() for item in items for p in item.split(",") if p.strip())
