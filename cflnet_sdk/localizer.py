"""``Localizer``: load a CFL-Net model once, then localise tampering in any number of images.

Pre- and post-processing come only from the model's own contract, so every backend (torch,
onnxruntime, tensorrt) sees the same input and returns the same kind of result. An image
becomes one model input (resize mode, the paper's) or many fixed-size tiles of its own pixels
(tile mode, :mod:`cflnet_sdk.tiling`); either way the backend only ever sees batches of the
contract's input shape.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from cflnet_sdk.contract import Contract, Mode
from cflnet_sdk.errors import CFLNetError, ConfigError, EngineCompatibilityError
from cflnet_sdk.fusion import fused_prediction
from cflnet_sdk.images import ImageInput, load_image
from cflnet_sdk.prediction import Prediction, image_score
from cflnet_sdk.tiling import TILE_BATCH, TiledImage

if TYPE_CHECKING:
    from cflnet_sdk.runtime.copymove import CopyMoveEvidence

# Copy-move analyses of different images at once, at most (each holds a few hundred MB).
COPY_MOVE_WORKERS = 2


class ResizedOutput:
    """The model-size map of an image in resize mode, brought back to the image's size."""

    def __init__(self, size: tuple[int, int], contract: Contract) -> None:
        self.contract = contract
        self.size = size
        self.output: np.ndarray | None = None

    def __len__(self) -> int:
        return 1

    def add(self, index: int, probability: np.ndarray) -> None:
        self.output = probability

    def result(self) -> tuple[np.ndarray, float]:
        """(probability at the original size, image score of the model-size map)."""
        assert self.output is not None, "run the model before asking for the result"
        return (self.contract.restore_probability(self.output, *self.size),
                image_score(np.clip(self.output, 0.0, 1.0)))


class ResizedImage(ResizedOutput):
    """One image in resize mode: the whole image resized to one model input."""

    def __init__(self, rgb: np.ndarray, contract: Contract) -> None:
        super().__init__(rgb.shape[:2], contract)
        self.tensor = contract.preprocess(rgb)

    def input(self, index: int) -> np.ndarray:
        return self.tensor


@dataclass
class Prepared:
    """One decoded image and its model inputs (one, or its tiles), which collect the outputs;
    its copy-move analysis, when the verdict fuses one, runs meanwhile."""

    rgb: np.ndarray
    inputs: ResizedImage | TiledImage
    source: str | None
    copy_move: Future[CopyMoveEvidence] | None = None


class Localizer:
    """A loaded model: ``predict`` one image, ``predict_batch`` many.

    ``backend`` is "auto" (from the suffix: .safetensors -> torch, .onnx -> onnxruntime,
    .engine/.plan -> tensorrt) or a backend name; ``device`` is "auto", "cpu", "cuda" or
    "cuda:N"; ``threshold`` (the mask's cut of the probability map) and
    ``decision_threshold`` (the image-level verdict's cut of the score) default to the
    contract's; ``contract`` overrides the file's
    (needed for raw TensorRT plans). ``mode`` is "resize" (the whole image resized to the
    model size: fast, the paper's) or "tile" (the image's own pixels in model-size tiles: keeps
    the traces resizing destroys); None takes the contract's. In tile mode at most
    ``tile_batch`` tiles go to the backend per call, so memory stays flat on huge photos.
    ``copy_move`` fuses copy-move evidence (:mod:`cflnet_sdk.fusion`) into every verdict, the
    same way whatever the backend: None takes the contract's choice (on for a model calibrated
    with it, such as the shipped default), True or False forces it.
    The copy-move analysis of an image starts as soon as it is decoded and runs beside the
    network on other threads. ``predict`` may be called from many threads at once.
    """

    def __init__(self, path: str | Path | None = None, backend: str = "auto",
                 device: str = "auto", threshold: float | None = None, *,
                 decision_threshold: float | None = None, mode: Mode | None = None,
                 contract: Contract | None = None, workers: int | None = None,
                 tile_batch: int = TILE_BATCH, copy_move: bool | None = None) -> None:
        from cflnet_sdk.default_model import require_default_model
        from cflnet_sdk.runtime.base import cpu_count, open_backend

        if tile_batch < 1:
            raise ConfigError(f"tile_batch must be at least 1, got {tile_batch}")
        self.path = Path(path) if path is not None else require_default_model()
        self.backend = open_backend(self.path, backend, device, contract)
        self._contract = self.backend.contract if mode is None else \
            replace(self.backend.contract, mode=mode)
        self.threshold = self.contract.threshold if threshold is None else float(threshold)
        self.decision_threshold = self.contract.decision if decision_threshold is None \
            else float(decision_threshold)
        for name, value in (("threshold", self.threshold),
                            ("decision_threshold", self.decision_threshold)):
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} {value} is outside [0, 1]")
        self.tile_batch = tile_batch
        self.copy_move = self.contract.fuses_copy_move if copy_move is None else copy_move
        # The copy-move evidence fused into every verdict, or None (public so profiles can time it).
        self._lock = None if self.backend.thread_safe else threading.Lock()
        self._workers = workers or min(8, cpu_count())
        self.fusion = CopyMoveFusion(self.contract, min(COPY_MOVE_WORKERS, self._workers)) \
            if self.copy_move else None

    # -- what is loaded ------------------------------------------------------------------
    @property
    def backend_name(self) -> str:
        return self.backend.name

    @property
    def device(self) -> str:
        return self.backend.device

    @property
    def precision(self) -> str:
        """What the model file computes in: fp32, fp16, int8-cpu or int8-tensorrt."""
        return self.backend.precision

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime execution providers in use (verified), else the backend's name."""
        return list(getattr(self.backend, "providers", [self.backend.name]))

    @property
    def contract(self) -> Contract:
        """The model's contract, with the mode this Localizer runs in."""
        return self._contract

    @property
    def copy_move_threshold(self) -> float | None:
        """The copy-move evidence's operating point, when the verdict fuses it."""
        return None if self.fusion is None else self.fusion.threshold

    @property
    def mode(self) -> Mode:
        return self.contract.mode

    def __repr__(self) -> str:
        return (f"Localizer({str(self.path)!r}, backend={self.backend_name!r}, "
                f"device={self.device!r}, providers={self.providers}, mode={self.mode!r})")

    # -- single image --------------------------------------------------------------------
    def predict(self, image: ImageInput) -> Prediction:
        """Localise tampering in one image (path, PIL.Image or HxWx3 / HxW uint8 array)."""
        prepared = self.prepare(image)
        self.infer([prepared])
        return self.finish(prepared)

    # -- many images ---------------------------------------------------------------------
    def predict_batch(self, images: Iterable[ImageInput], batch_size: int = 8
                      ) -> list[Prediction]:
        """Predictions in input order.

        Resize mode: one backend call per ``batch_size`` images. Tile mode: the tiles of
        ``batch_size`` images share backend calls of at most ``tile_batch`` tiles.
        """
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
        outputs: Iterator[Prediction] = iter(())
        if good:
            self.infer(good)
            outputs = pool.map(self.finish, good)
        for item in prepared:
            yield next(outputs) if isinstance(item, Prepared) else item

    # -- the steps, public so benchmarks can time them -----------------------------------
    def prepare(self, image: ImageInput) -> Prepared:
        """Decode and preprocess one image with the model's contract and mode."""
        rgb = load_image(image)
        source = str(image) if isinstance(image, (str, Path)) else None
        copy_move = None if self.fusion is None else self.fusion.start(rgb)
        return Prepared(rgb, self.model_inputs(rgb), source, copy_move)

    def model_inputs(self, rgb: np.ndarray) -> ResizedImage | TiledImage:
        """The model inputs of a decoded image (one, or its tiles), which collect the outputs."""
        kind = TiledImage if self.mode == "tile" else ResizedImage
        return kind(rgb, self.contract)

    def infer(self, prepared: list[Prepared]) -> None:
        """Run the model on every input of ``prepared``; each collects its outputs.

        Resize mode: one call for all images. Tile mode: calls of ``tile_batch`` tiles, cut
        and normalised just before their call, so tiles of several images share a call.
        """
        units = [(item.inputs, index) for item in prepared for index in range(len(item.inputs))]
        step = self.tile_batch if self.mode == "tile" else len(units)
        for start in range(0, len(units), step):
            part = units[start:start + step]
            outputs = self.run(np.stack([inputs.input(index) for inputs, index in part]))
            for (inputs, index), probability in zip(part, outputs, strict=True):
                inputs.add(index, probability)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(N, C, H, W)`` model input -> ``(N, H, W)`` probabilities, split to ``max_batch``."""
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

    def finish(self, prepared: Prepared) -> Prediction:
        """The collected model outputs -> Prediction at the original size: the one place every
        backend's output passes, so the verdict is fused the same way for all of them."""
        probability, score = prepared.inputs.result()
        prediction = Prediction(probability=probability, score=score, threshold=self.threshold,
                                image=prepared.rgb, source=prepared.source,
                                decision_threshold=self.decision_threshold)
        if self.fusion is None:
            return prediction
        found = prepared.copy_move.result() if prepared.copy_move is not None else \
            self.fusion.detector.analyse(prepared.rgb)
        return self.fusion(prediction, found)

    def close(self) -> None:
        """Release the backend's device memory and the copy-move threads now instead of at
        garbage collection."""
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
        if self.fusion is not None:
            self.fusion.close()

    def __enter__(self) -> Localizer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class CopyMoveFusion:
    """Adds copy-move evidence to a network's prediction (:mod:`cflnet_sdk.fusion`).

    The analysis runs on its own threads (``start``), so on a CPU it fills the cores the
    network's single-threaded neighbours (decoding, error levels, tiling) leave idle, and on a
    GPU it runs while the device works. Few threads: each analysis of a large photo holds a
    few hundred MB.
    """

    def __init__(self, contract: Contract, workers: int = 1) -> None:
        from cflnet_sdk.runtime.copymove import SCORE_THRESHOLD, CopyMoveDetector

        self.detector = CopyMoveDetector()
        self.threshold = contract.copy_move_threshold if contract.fuses_copy_move else \
            SCORE_THRESHOLD
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="cflnet-copy-move")

    def start(self, rgb: np.ndarray) -> Future[CopyMoveEvidence]:
        """Begin the analysis of ``rgb`` now; ``Future.result()`` gives its evidence."""
        return self._pool.submit(self.detector.analyse, rgb)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __call__(self, prediction: Prediction, found: CopyMoveEvidence) -> Prediction:
        return fused_prediction(prediction, found, self.threshold)


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk
