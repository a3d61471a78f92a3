"""Side-by-side runtime benchmark: the same images through several backends in one process.

Backends are timed round-robin (one call each, in turn) so a busy machine slows them alike and
the ratios stay honest; each model call is followed by an end-to-end call of the same backend,
so the end-to-end overhead is a median of paired ratios, robust to load that comes and goes.
Reported: model latency percentiles per batch (and the minimum, the best estimate of an idle
machine), throughput, end-to-end time of ``predict`` on a real JPEG (decode + preprocessing +
model + post-processing) and its parts, and memory.

Tile mode (:func:`run_tile_benchmark`) times ``predict`` end to end on photos of given sizes in
megapixels and reports milliseconds per megapixel and the peak memory of each call.

Every model file given is timed, each as its own row named by file and precision: comparing an
fp32 file with its INT8 variant on one backend is the usual case, so a backend may appear
several times, and a file that cannot be run is an error naming it, never dropped.
"""

from __future__ import annotations

import math
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cflnet_sdk.errors import CFLNetError, ConfigError, ModelFileError

E2E_SIZE = (1024, 768)  # width, height of the end-to-end test photo
MEGAPIXELS = (1.0, 4.0, 12.0)  # tile mode: photo sizes timed by default (4:3, 12 MP = 4000x3000)


@dataclass
class Result:
    """One model file on one backend at one batch size; times in milliseconds."""

    backend: str
    device: str
    providers: list[str]
    model: str
    precision: str  # fp32, fp16, int8-cpu, int8-tensorrt (Localizer.precision)
    batch_size: int
    size: int
    latency_p50: float = 0.0
    latency_p90: float = 0.0
    latency_p99: float = 0.0
    latency_min: float = 0.0
    throughput: float = 0.0  # images per second, model only
    e2e_per_image: float = 0.0  # predict()/predict_batch() on the JPEG, per image
    e2e_overhead_pct: float = 0.0  # median over rounds of (e2e / model - 1) * 100
    stages: dict[str, float] = field(default_factory=dict)  # decode, preprocess, postprocess
    peak_rss_mb: float = 0.0
    gpu_memory_mb: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TileResult:
    """One model file on one backend on one photo size in tile mode; times in milliseconds."""

    backend: str
    device: str
    providers: list[str]
    model: str
    precision: str
    megapixels: float
    width: int
    height: int
    tiles: int
    tile_size: int
    ms_per_image: float = 0.0  # median end-to-end predict() (decode to Prediction)
    ms_per_megapixel: float = 0.0
    peak_rss_mb: float = 0.0  # highest process RSS during one predict() of this photo

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentiles(seconds: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(np.asarray(seconds) * 1000.0, [50, 90, 99])
    return float(p50), float(p90), float(p99)


def round_robin(calls: list[Callable[[], Any]], warmup: int, iterations: int
                ) -> list[list[float]]:
    """Time each call ``iterations`` times, interleaved; returns seconds per call."""
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(iterations):
        for call, bucket in zip(calls, times, strict=True):
            start = time.perf_counter()
            call()
            bucket.append(time.perf_counter() - start)
    return times


def sample_photo(folder: Path, size: tuple[int, int] = E2E_SIZE) -> Path:
    """A ``size`` (width, height) JPEG of a natural photo (scikit-image's), or of smooth noise
    without it."""
    from PIL import Image

    try:
        from skimage import data

        pixels = data.astronaut()
    except ImportError:
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    path = folder / f"benchmark-{size[0]}x{size[1]}.jpg"
    Image.fromarray(pixels).resize(size, Image.BICUBIC).save(path, quality=90)
    return path


def photo_size(megapixels: float) -> tuple[int, int]:
    """(width, height) of a 4:3 photo of ``megapixels``."""
    width = round(math.sqrt(megapixels * 1e6 * 4 / 3))
    return width, round(width * 3 / 4)


def peak_rss_mb() -> float:
    """Peak resident memory of this process since start or :func:`reset_peak_rss` (Linux
    VmHWM; elsewhere ``ru_maxrss``, which cannot be reset)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def reset_peak_rss() -> None:
    """Start a new peak-memory window (Linux: VmHWM back to the current RSS)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:  # not Linux, or not allowed: the peak then covers the whole run
        pass


def gpu_memory_mb(localizer: Any) -> float | None:
    """Peak torch allocation on CUDA, else device-wide use via cuda-python, else None."""
    if localizer.device.startswith("cuda"):
        if localizer.backend_name == "torch":
            import torch

            return torch.cuda.max_memory_allocated(localizer.device) / 2**20
        try:
            from cflnet_sdk.runtime.tensorrt_backend import Cuda, import_cudart

            return Cuda(import_cudart()).memory_used() / 2**20
        except Exception:  # no cuda-python: not worth failing a benchmark over
            return None
    return None


def plan_runs(models: list[Path], backends: list[str] | None, size: int | None,
              scratch: Path) -> list[tuple[Path, str]]:
    """(model file, backend) pairs to time, in the order given: every file gets a row.

    ``backends`` None: each file on the backend of its suffix. A list: each file on every
    listed backend that opens it; a checkpoint also on onnxruntime, through an ONNX exported
    here, when onnxruntime is listed and no ``.onnx`` file is given. A file that no listed
    backend runs, and a listed backend that no file is for, are errors naming them.
    """
    from cflnet_sdk.runtime.base import resolve

    if backends is None:
        return [(model, resolve(model).name) for model in models]
    infos = [resolve("", name) for name in backends]  # an unknown name fails here
    export = "onnxruntime" in backends and not any(m.suffix.lower() == ".onnx" for m in models)
    runs: list[tuple[Path, str]] = []
    for model in models:
        suffix = model.suffix.lower()
        found = [(model, info.name) for info in infos if suffix in info.suffixes]
        if export and suffix == ".safetensors":
            onnx = scratch / f"{model.stem}-{len(runs)}.onnx"
            found.append((exported_onnx(model, onnx, size), "onnxruntime"))
        if not found:
            raise ModelFileError(f"none of the backends {', '.join(backends)} runs this file; "
                                 f"add --backend {resolve(model).name}, or leave --backend out "
                                 "to run each file on the backend of its suffix", model)
        runs += found
    for info in infos:
        if all(name != info.name for _, name in runs):
            raise ModelFileError(f"no model file for the {info.name} backend among "
                                 f"{[str(m) for m in models]}; pass one ending in "
                                 f"{', '.join(info.suffixes)}")
    return runs


def exported_onnx(checkpoint: Path, output: Path, size: int | None) -> Path:
    """The checkpoint exported to ONNX (at ``size``, if given) for the onnxruntime backend."""
    from cflnet_sdk.export.onnx import export_onnx

    return export_onnx(checkpoint, output, size=size)


def open_localizer(model: Path, backend: str, device: str, size: int | None,
                   mode: str | None = None) -> Any:
    """A Localizer in ``mode`` running at ``size`` x ``size`` (re-opened with that contract
    if needed; None keeps the model's size) that has run one input: a file that cannot be
    benchmarked fails here, by name, before any timing starts."""
    from cflnet_sdk.localizer import Localizer

    try:
        localizer = Localizer(model, backend=backend, device=device, mode=mode)  # type: ignore[arg-type]
        if size is not None and localizer.contract.size != (size, size):
            localizer.close()
            localizer = Localizer(model, backend=backend, device=device,
                                  contract=localizer.contract.with_size(size, size))
        contract = localizer.contract
        localizer.run(np.zeros((1, contract.channels, *contract.size), np.float32))
    except CFLNetError as exc:
        if exc.path is not None:
            raise
        raise type(exc)(f"cannot benchmark it on {backend}: {exc}", model) from exc
    except Exception as exc:  # the backend library's own error types, raised at run time
        raise ModelFileError(f"{backend} loaded it but could not run it ({type(exc).__name__}: "
                             f"{str(exc)[:300]}); check it with `cflnet-export check`",
                             model) from exc
    return localizer


def open_all(runs: list[tuple[Path, str]], device: str, size: int | None, mode: str | None,
             log: Callable[[str], None]) -> list[Any]:
    """A Localizer per run, in order, each announced with its file, precision and device."""
    localizers = []
    for model, backend in runs:
        localizers.append(open_localizer(model, backend, device, size, mode))
        log(f"loaded {model.name} ({localizers[-1].precision}) on {backend}, "
            f"{localizers[-1].device}" + (f", {mode} mode" if mode else ""))
    return localizers


def end_to_end(localizer: Any, photo: Path, batch_size: int) -> Callable[[], Any]:
    """``predict`` of the photo at batch 1, ``predict_batch`` of copies of it above."""
    if batch_size == 1:
        return partial(localizer.predict, photo)
    return partial(localizer.predict_batch, [photo] * batch_size, batch_size)


def stage_times(localizer: Any, photo: Path, iterations: int) -> dict[str, float]:
    """Median decode, preprocess and post-processing times of ``predict``, in ms."""
    from cflnet_sdk.images import load_image

    contract = localizer.contract
    rgb = load_image(photo)
    prepared = localizer.prepare(photo)
    localizer.infer([prepared])
    calls = [lambda: load_image(photo), lambda: contract.preprocess(rgb),
             lambda: localizer.finish(prepared)]
    times = round_robin(calls, 1, iterations)
    return {name: float(np.median(t) * 1000.0)
            for name, t in zip(("decode", "preprocess", "postprocess"), times, strict=True)}


def run_benchmark(models: list[Path], backends: list[str] | None = None, device: str = "auto",
                  batch_sizes: tuple[int, ...] = (1, 8), size: int | None = 256, warmup: int = 3,
                  iterations: int = 20, log: Callable[[str], None] = print) -> list[Result]:
    """Benchmark every model file (on ``backends``, None: its suffix's) at every batch size,
    at ``size`` x ``size`` (None: each model's own size); see :func:`plan_runs`."""
    if not models or not batch_sizes or min(batch_sizes) < 1 or iterations < 1:
        raise ConfigError("need at least one model, batch sizes >= 1 and iterations >= 1")
    with tempfile.TemporaryDirectory(prefix="cflnet-bench-") as scratch:
        photo = sample_photo(Path(scratch))
        localizers = open_all(plan_runs(models, backends, size, Path(scratch)), device, size,
                              None, log)
        results: list[Result] = []
        for batch_size in batch_sizes:
            calls = [call for loc in localizers
                     for call in (partial(loc.run, np.stack([loc.prepare(photo).inputs.input(0)]
                                                            * batch_size)),
                                  end_to_end(loc, photo, batch_size))]
            times = round_robin(calls, warmup, iterations)
            for loc, model_t, e2e_t in zip(localizers, times[::2], times[1::2], strict=True):
                p50, p90, p99 = percentiles(model_t)
                e2e = float(np.median(e2e_t)) * 1000.0 / batch_size
                ratio = float(np.median(np.asarray(e2e_t) / np.asarray(model_t)))
                results.append(Result(
                    backend=loc.backend_name, device=loc.device, providers=loc.providers,
                    model=str(loc.path), precision=loc.precision, batch_size=batch_size,
                    size=loc.contract.height,
                    latency_p50=p50, latency_p90=p90, latency_p99=p99,
                    latency_min=float(np.min(model_t)) * 1000.0,
                    throughput=batch_size / float(np.median(model_t)), e2e_per_image=e2e,
                    e2e_overhead_pct=(ratio - 1.0) * 100.0,
                    stages=stage_times(loc, photo, iterations) if batch_size == 1 else {},
                    peak_rss_mb=peak_rss_mb(), gpu_memory_mb=gpu_memory_mb(loc)))
                log(format_row(results[-1]))
        for loc in localizers:
            loc.close()
    return results


def run_tile_benchmark(models: list[Path], backends: list[str] | None = None,
                       device: str = "auto",
                       megapixels: tuple[float, ...] = MEGAPIXELS, warmup: int = 1,
                       iterations: int = 3, log: Callable[[str], None] = print
                       ) -> list[TileResult]:
    """Tile-mode ``predict`` of a JPEG of each size through every model file, interleaved."""
    from cflnet_sdk.tiling import tile_count

    if not models or not megapixels or min(megapixels) <= 0 or iterations < 1:
        raise ConfigError("need at least one model, sizes > 0 megapixels and iterations >= 1")
    with tempfile.TemporaryDirectory(prefix="cflnet-bench-") as scratch:
        localizers = open_all(plan_runs(models, backends, None, Path(scratch)), device, None,
                              "tile", log)
        results: list[TileResult] = []
        for size in megapixels:
            width, height = photo_size(size)
            photo = sample_photo(Path(scratch), (width, height))
            peaks: list[list[float]] = [[] for _ in localizers]
            calls = [partial(_peak_of, loc.predict, photo, bucket)
                     for loc, bucket in zip(localizers, peaks, strict=True)]
            times = round_robin(calls, warmup, iterations)
            for loc, seconds, bucket in zip(localizers, times, peaks, strict=True):
                ms = float(np.median(seconds)) * 1000.0
                tiles = tile_count(height, width, loc.contract)
                results.append(TileResult(
                    backend=loc.backend_name, device=loc.device, providers=loc.providers,
                    model=str(loc.path), precision=loc.precision,
                    megapixels=width * height / 1e6, width=width,
                    height=height, tiles=tiles, tile_size=loc.contract.height,
                    ms_per_image=ms, ms_per_megapixel=ms / (width * height / 1e6),
                    peak_rss_mb=max(bucket)))
                log(format_tile_row(results[-1]))
        for loc in localizers:
            loc.close()
    return results


def _peak_of(call: Callable[..., Any], argument: Any, peaks: list[float]) -> None:
    """``call(argument)``, appending the peak RSS during it to ``peaks``."""
    reset_peak_rss()
    call(argument)
    peaks.append(peak_rss_mb())


# The file name comes last, unpadded: names are long, and a row must still say which file it is.
HEADER = (f"{'backend':<12} {'precision':<13} {'device':<7} {'batch':>5} {'min ms':>8} "
          f"{'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'img/s':>7} {'e2e ms/img':>10} "
          f"{'overhead':>8} {'peak RSS':>9}  model")


def format_row(r: Result) -> str:
    return (f"{r.backend:<12} {r.precision:<13} {r.device:<7} {r.batch_size:>5} "
            f"{r.latency_min:>8.1f} {r.latency_p50:>8.1f} "
            f"{r.latency_p90:>8.1f} {r.latency_p99:>8.1f} {r.throughput:>7.2f} "
            f"{r.e2e_per_image:>10.1f} {r.e2e_overhead_pct:>7.1f}% {r.peak_rss_mb:>7.0f}MB  "
            f"{Path(r.model).name}")


TILE_HEADER = (f"{'backend':<12} {'precision':<13} {'device':<7} {'MP':>5} {'size':>10} "
               f"{'tiles':>6} {'ms/image':>9} {'ms/MP':>8} {'peak RSS':>9}  model")


def format_tile_row(r: TileResult) -> str:
    return (f"{r.backend:<12} {r.precision:<13} {r.device:<7} {r.megapixels:>5.1f} "
            f"{f'{r.width}x{r.height}':>10} {r.tiles:>6} {r.ms_per_image:>9.0f} "
            f"{r.ms_per_megapixel:>8.1f} {r.peak_rss_mb:>7.0f}MB  {Path(r.model).name}")
