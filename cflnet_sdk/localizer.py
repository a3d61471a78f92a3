"""``Localizer``: load a CFL-Net model once, then localise tampering in any number of images.

Pre- and post-processing come only from the model's own contract, so every backend (torch,
onnxruntime, tensorrt) sees the same input and returns the same kind of result.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import CFLNetError, ConfigError, EngineCompatibilityError
from cflnet_sdk.images import ImageInput, load_image
from cflnet_sdk.prediction import Prediction, image_score


@dataclass
class Prepared:
    """One decoded image and its model input."""

    rgb: np.ndarray
    tensor: np.ndarray
    source: str | None


class Localizer:
    """A loaded model: ``predict`` one image, ``predict_batch`` many.

    ``backend`` is "auto" (from the suffix: .safetensors -> torch, .onnx -> onnxruntime,
    .engine/.plan -> tensorrt) or a backend name; ``device`` is "auto", "cpu", "cuda" or
    "cuda:N"; ``threshold`` defaults to the contract's; ``contract`` overrides the file's
    (needed for raw TensorRT plans). ``predict`` may be called from many threads at once.
    """

    def __init__(self, path: str | Path | None = None, backend: str = "auto",
                 device: str = "auto", threshold: float | None = None, *,
                 contract: Contract | None = None, workers: int | None = None) -> None:
        from cflnet_sdk.default_model import require_default_model
        from cflnet_sdk.runtime.base import cpu_count, open_backend

        self.path = Path(path) if path is not None else require_default_model()
        self.backend = open_backend(self.path, backend, device, contract)
        self.threshold = self.contract.threshold if threshold is None else float(threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold {threshold} is outside [0, 1]")
        self._lock = None if self.backend.thread_safe else threading.Lock()
        self._workers = workers or min(8, cpu_count())

    # -- what is loaded ------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime execution providers in use (verified), else the backend's name."""
        return list(getattr(self.backend, "providers", [self.backend.name]))

    @property
    def contract(self) -> Contract:
        return self.backend.contract

    def __repr__(self) -> str:
        return (f"Localizer({str(self.path)!r}, backend={self.backend_name!r}, "
                f"device={self.device!r}, providers={self.providers})")

    # -- single image --------------------------------------------------------------------
    def predict(self, image: ImageInput) -> Prediction:
        """Localise tampering in one image (path, PIL.Image or HxWx3 / HxW uint8 array)."""
        prepared = self.prepare(image)
        return self.finish(prepared, self.run(prepared.tensor[None])[0])

    # -- many images ---------------------------------------------------------------------
    def predict_batch(self, images: Iterable[ImageInput], batch_size: int = 8
                      ) -> list[Prediction]:
        """Predictions in input order; one backend call per ``batch_size`` images."""
        return list(self.predict_iter(images, batch_size))  # type: ignore[arg-type]

    def predict_iter(self, images: Iterable[ImageInput], batch_size: int = 8,
                     errors: Literal["raise", "return"] = "raise"
                     ) -> Iterator[Prediction | CFLNetError]:
        """Stream predictions in input order, decoding the next batch while this one runs.

        With ``errors="return"`` an image that cannot be decoded yields its ``CFLNetError``
        in its place and the rest go on (what ``cflnet predict`` does for a folder).
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        chunks = _chunks(images, batch_size)
        with ThreadPoolExecutor(self._workers, thread_name_prefix="cflnet-decode") as pool:
            pending = [pool.submit(self.prepare, image) for image in next(chunks, [])]
            while pending:
                upcoming = [pool.submit(self.prepare, image) for image in next(chunks, [])]
                yield from self._run_chunk(pending, pool, errors)
                pending = upcoming

    def _run_chunk(self, futures: list[Future[Prepared]], pool: ThreadPoolExecutor,
                   errors: str) -> Iterator[Prediction | CFLNetError]:
        prepared: list[Prepared | CFLNetError] = []
        for future in futures:
            try:
                prepared.append(future.result())
            except CFLNetError as exc:
                if errors == "raise":
                    raise
                prepared.append(exc)
        good = [p for p in prepared if isinstance(p, Prepared)]
        outputs: Iterator[np.ndarray] = iter(())
        if good:
            probabilities = self.run(np.stack([p.tensor for p in good]))
            outputs = pool.map(self.finish, good, probabilities)
        for item in prepared:
            yield next(outputs) if isinstance(item, Prepared) else item

    # -- the steps, public so benchmarks can time them -----------------------------------
    def prepare(self, image: ImageInput) -> Prepared:
        """Decode and preprocess one image with the model's contract."""
        rgb = load_image(image)
        source = str(image) if isinstance(image, (str, Path)) else None
        return Prepared(rgb, self.contract.preprocess(rgb), source)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(N, 3, H, W)`` model input -> ``(N, H, W)`` probabilities, split to ``max_batch``."""
        limit = self.backend.max_batch or len(batch)
        parts = [self._run_one(batch[i:i + limit]) for i in range(0, len(batch), limit)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_one(self, batch: np.ndarray) -> np.ndarray:
        if self._lock is None:
            output = self.backend.run(batch)
        else:
            with self._lock:
                output = self.backend.run(batch)
        expected = (len(batch), *self.contract.size)
        if output.shape != expected:
            raise EngineCompatibilityError(f"the {self.backend_name} backend returned shape "
                                           f"{output.shape}, expected {expected}; the model "
                                           "file does not match its contract", self.path)
        return output

    def finish(self, prepared: Prepared, probability: np.ndarray) -> Prediction:
        """Model-size probability -> Prediction at the original size."""
        height, width = prepared.rgb.shape[:2]
        return Prediction(
            probability=self.contract.restore_probability(probability, height, width),
            score=image_score(np.clip(probability, 0.0, 1.0)), threshold=self.threshold,
            image=prepared.rgb, source=prepared.source)

    def close(self) -> None:
        """Release the backend's device memory now instead of at garbage collection."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Localizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
