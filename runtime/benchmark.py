"""Side-by-side runtime benchmark: the same images through several backends in one process.

Backends are timed round-robin (one call each, in turn) so a busy machine slows them alike and
the ratios stay honest; each model call is followed by an end-to-end call of the same backend,
so the end-to-end overhead is a median of paired ratios, robust to load that comes and goes.
Reported: model latency percentiles per batch (and the minimum, the best estimate of an idle
machine), throughput, end-to-end time of ``predict`` on a real JPEG (decode + preprocessing +
model + post-processing) and its parts, and memory.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cflnet_sdk.errors import ConfigError, ModelFileError

E2E_SIZE = (1024, 768)  # width, height of the end-to-end test photo


@dataclass
class Result:
    """One backend at one batch size; times in milliseconds."""

    backend: str
    device: str
    providers: list[str]
    model: str
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


def sample_photo(folder: Path) -> Path:
    """A 1024x768 JPEG of a natural photo (scikit-image's), or of smooth noise without it."""
    from PIL import Image

    try:
        from skimage import data

        pixels = data.astronaut()
    except ImportError:
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    path = folder / "benchmark-1024x768.jpg"
    Image.fromarray(pixels).resize(E2E_SIZE, Image.BICUBIC).save(path, quality=90)
    return path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


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


def model_for(backend: str, models: list[Path], size: int, scratch: Path) -> Path:
    """The model file a backend should load; exports an ONNX from a checkpoint if needed."""
    from cflnet_sdk.runtime.base import backends

    suffixes = backends()[backend].suffixes
    for model in models:
        if model.suffix.lower() in suffixes:
            return model
    checkpoints = [m for m in models if m.suffix.lower() == ".safetensors"]
    if backend == "onnxruntime" and checkpoints:
        from cflnet_sdk.export.onnx import export_onnx

        return export_onnx(checkpoints[0], scratch / f"{checkpoints[0].stem}-{size}.onnx",
                           size=size)
    raise ModelFileError(f"no model file for the {backend} backend among "
                         f"{[str(m) for m in models]}; pass one ending in {', '.join(suffixes)}")


def open_localizer(model: Path, backend: str, device: str, size: int) -> Any:
    """A Localizer running at ``size`` x ``size`` (re-opened with that contract if needed)."""
    from cflnet_sdk.localizer import Localizer

    localizer = Localizer(model, backend=backend, device=device)
    if localizer.contract.size != (size, size):
        localizer.close()
        localizer = Localizer(model, backend=backend, device=device,
                              contract=localizer.contract.with_size(size, size))
    return localizer


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
    tensor = contract.preprocess(rgb)
    probability = localizer.run(tensor[None])
    prepared = localizer.prepare(photo)
    calls = [lambda: load_image(photo), lambda: contract.preprocess(rgb),
             lambda: localizer.finish(prepared, probability[0])]
    times = round_robin(calls, 1, iterations)
    return {name: float(np.median(t) * 1000.0)
            for name, t in zip(("decode", "preprocess", "postprocess"), times, strict=True)}


def run_benchmark(models: list[Path], backends: list[str], device: str = "auto",
                  batch_sizes: tuple[int, ...] = (1, 8), size: int = 256, warmup: int = 3,
                  iterations: int = 20, log: Callable[[str], None] = print) -> list[Result]:
    """Benchmark every backend at every batch size; see the module docstring."""
    if not backends or not batch_sizes or min(batch_sizes) < 1 or iterations < 1:
        raise ConfigError("need at least one backend, batch sizes >= 1 and iterations >= 1")
    with tempfile.TemporaryDirectory(prefix="cflnet-bench-") as scratch:
        photo = sample_photo(Path(scratch))
        localizers = []
        for name in backends:
            model = model_for(name, models, size, Path(scratch))
            localizers.append(open_localizer(model, name, device, size))
            log(f"loaded {name} ({model}) on {localizers[-1].device}")
        results: list[Result] = []
        for batch_size in batch_sizes:
            batch = np.stack([localizers[0].prepare(photo).tensor] * batch_size)
            calls = [call for loc in localizers
                     for call in (partial(loc.run, batch), end_to_end(loc, photo, batch_size))]
            times = round_robin(calls, warmup, iterations)
            for loc, model_t, e2e_t in zip(localizers, times[::2], times[1::2], strict=True):
                p50, p90, p99 = percentiles(model_t)
                e2e = float(np.median(e2e_t)) * 1000.0 / batch_size
                ratio = float(np.median(np.asarray(e2e_t) / np.asarray(model_t)))
                results.append(Result(
                    backend=loc.backend_name, device=loc.device, providers=loc.providers,
                    model=str(loc.path), batch_size=batch_size, size=size,
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


HEADER = (f"{'backend':<12} {'device':<7} {'batch':>5} {'min ms':>8} {'p50 ms':>8} "
          f"{'p90 ms':>8} {'p99 ms':>8} {'img/s':>7} {'e2e ms/img':>10} {'overhead':>8} "
          f"{'peak RSS':>9}")


def format_row(r: Result) -> str:
    return (f"{r.backend:<12} {r.device:<7} {r.batch_size:>5} {r.latency_min:>8.1f} "
            f"{r.latency_p50:>8.1f} "
            f"{r.latency_p90:>8.1f} {r.latency_p99:>8.1f} {r.throughput:>7.2f} "
            f"{r.e2e_per_image:>10.1f} {r.e2e_overhead_pct:>7.1f}% {r.peak_rss_mb:>7.0f}MB")
