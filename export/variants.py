"""Every precision variant of a checkpoint, measured on both sides: speed and accuracy.

Users pick a variant by its speed at a known accuracy, so both are measured the same way for
every file: :func:`build_variants` writes the fp32, fp16 and the two INT8 ONNX files (CPU
layout and TensorRT layout, calibrated on real photos), :func:`measure_variants` scores each
through ``Localizer`` on a labelled folder (honest per-image AUC, and the per-image IoU of its
masks with the fp32 file's) and times each beside torch eager in one interleaved run. The
result is one table (``variants_report``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cflnet_sdk.errors import DataError
from cflnet_sdk.fileio import sha256_file

if TYPE_CHECKING:
    from cflnet_sdk.export.calibration import Calibration
    from cflnet_sdk.export.precision import Int8Recipe
    from cflnet_sdk.prediction import Prediction
    from cflnet_sdk.training.data.readers import Record

# Variant name -> (precision, INT8 layout). fp32 comes first: it is every other row's reference.
VARIANTS: dict[str, tuple[str, str | None]] = {
    "fp32": ("fp32", None), "fp16": ("fp16", None),
    "int8-cpu": ("int8", "cpu"), "int8-tensorrt": ("int8", "tensorrt")}
TORCH = "torch eager"  # the checkpoint itself, run by PyTorch: the speed reference


@dataclass
class Built:
    """The variant files, the calibration the INT8 ones were quantized with, and the mode."""

    files: dict[str, Path]
    calibration: Calibration
    tile: bool


def build_variants(checkpoint: Path, output: Path, calibration_folder: Path, count: int,
                   recipe: Int8Recipe, log: Callable[[str], None] = print) -> Built:
    """Write ``<stem>-<variant>.onnx`` for every variant into ``output``, INT8 calibrated on
    ``count`` real photos of ``calibration_folder``."""
    import onnx

    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.calibration import collect_calibration
    from cflnet_sdk.export.onnx import build_onnx, resolve_model, save_onnx
    from cflnet_sdk.export.precision import make_variant
    from cflnet_sdk.metadata import CONTRACT_KEY

    net, sha = resolve_model(checkpoint)
    fp32 = build_onnx(net, source_sha256=sha)
    metadata = {p.key: p.value for p in fp32.metadata_props}
    contract = Contract.from_json(metadata[CONTRACT_KEY])
    calibration = collect_calibration(contract, calibration_folder, count)
    for line in calibration.lines():
        log(line)
    output.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, (precision, target) in VARIANTS.items():
        copy = onnx.ModelProto()
        copy.CopyFrom(fp32)
        variant = make_variant(copy, precision, calibration=calibration,  # type: ignore[arg-type]
                               int8_target=target or "tensorrt", recipe=recipe)  # type: ignore[arg-type]
        files[name] = save_onnx(variant, output / f"{checkpoint.stem}-{name}.onnx")
        log(f"wrote {files[name]} ({files[name].stat().st_size / 1e6:.1f} MB)")
    return Built(files, calibration, contract.mode == "tile")


def check_disjoint(photos: list[Path], data: str | Path, data_format: str = "auto") -> None:
    """Refuse calibration photos that are images of the evaluation set (same file or bytes):
    a variant tuned on the images it is scored on would be measured unfairly."""
    from cflnet_sdk.training.data.readers import open_dataset

    images = [r.image for r in open_dataset(data, format=data_format, on_error="skip")]
    by_size: dict[int, list[Path]] = {}
    for image in images:
        by_size.setdefault(image.stat().st_size, []).append(image)
    resolved = {image.resolve() for image in images}
    for photo in photos:
        twins = [i for i in by_size.get(photo.stat().st_size, [])
                 if sha256_file(i) == sha256_file(photo)]
        if photo.resolve() in resolved or twins:
            raise DataError(f"this calibration photo is an image of the evaluation data {data}; "
                            "calibrate on other photos (--calib)", photo)


@dataclass
class MaskAgreement:
    """Per-image IoU between a model's masks and the reference model's, which are kept
    bit-packed by image (a 12 MP mask is 1.5 MB) while the reference is evaluated."""

    reference: dict[str, tuple[tuple[int, ...], np.ndarray]] = field(default_factory=dict)
    ious: list[float] = field(default_factory=list)

    def keep(self, record: Record, prediction: Prediction) -> None:
        self.reference[str(record.image)] = (prediction.mask.shape,
                                             np.packbits(prediction.mask))

    def compare(self, record: Record, prediction: Prediction) -> None:
        if (kept := self.reference.get(str(record.image))) is None:
            return
        shape, packed = kept
        reference = np.unpackbits(packed, count=int(np.prod(shape))).reshape(shape).astype(bool)
        union = np.count_nonzero(reference | prediction.mask)
        inter = np.count_nonzero(reference & prediction.mask)
        self.ious.append(1.0 if union == 0 else inter / union)  # both empty: they agree

    def mean_and_reset(self) -> float | None:
        mean = float(np.mean(self.ious)) if self.ious else None
        self.ious = []
        return mean


@dataclass
class Measured:
    """One file's accuracy and speed; ``ms`` per image (resize) or per megapixel (tile)."""

    name: str
    path: Path
    backend: str
    precision: str = ""
    auc: float | None = None
    beats_prior: float | None = None
    mask_iou: float | None = None
    ms: float | None = None
    evaluation: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)


def measure_variants(checkpoint: Path, built: Built, data: str, *,
                     data_format: str = "auto", batch_size: int = 8, device: str = "cpu",
                     megapixels: float = 1.0, warmup: int = 2, iterations: int = 10,
                     log: Callable[[str], None] = print) -> tuple[list[Measured], dict[str, Any]]:
    """Evaluate every file (fp32 first, the reference) and torch eager, then time them all in
    one interleaved benchmark; returns the rows and the centre prior's metrics."""
    from cflnet_sdk.training.evaluate import evaluate, evaluate_baselines

    rows = [Measured(name, path, "onnxruntime") for name, path in built.files.items()]
    rows.insert(1, Measured(TORCH, checkpoint, "torch"))
    baselines = evaluate_baselines(data, data_format=data_format)
    agreement = MaskAgreement()
    for row in rows:
        each = agreement.keep if row.name == "fp32" else agreement.compare
        result = evaluate(row.path, data, backend=row.backend, device=device,
                          data_format=data_format, batch_size=batch_size, baselines=baselines,
                          each=each)
        row.evaluation = result.to_dict()
        row.auc, row.beats_prior = (result.metrics.get("pixel_auc"),
                                    result.metrics.get("beats_centre_prior"))
        row.mask_iou = 1.0 if row.name == "fp32" else agreement.mean_and_reset()
        log(f"{row.path.name}: pixel AUC {row.auc}, mask IoU vs fp32 {row.mask_iou} "
            f"({result.seconds:.0f} s)")
    time_rows(rows, device, built.tile, megapixels, warmup, iterations, log)
    prior = next(e for e in baselines.evaluations if e.model == "centre prior")
    return rows, prior.metrics


def time_rows(rows: list[Measured], device: str, tile: bool, megapixels: float, warmup: int,
              iterations: int, log: Callable[[str], None]) -> None:
    """One interleaved benchmark of every row's file, on the backend of its suffix."""
    from cflnet_sdk.runtime.benchmark import run_benchmark, run_tile_benchmark

    models = [row.path for row in rows]
    if tile:
        results = run_tile_benchmark(models, None, device, (megapixels,), warmup=warmup,
                                     iterations=iterations, log=log)
    else:
        results = run_benchmark(models, None, device, (1,), size=None, warmup=warmup,
                                iterations=iterations, log=log)
    for row, result in zip(rows, results, strict=True):
        row.precision, row.timing = result.precision, result.as_dict()
        row.ms = result.ms_per_megapixel if tile else result.latency_p50
