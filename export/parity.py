"""Parity proof: run an exported model beside the PyTorch network and measure the difference.

Polygraphy's Comparator runs both (its OnnxrtRunner / TrtRunner for the export, a small
runner here for PyTorch) on the same inputs and gives the pass/fail verdict with
``CompareFunc.simple``; this module adds the figures a user cares about: max and mean absolute
probability error, mask IoU at the contract threshold, and the change in pixel AUC on images
with known tampered regions (real photos with synthetic edits). Tile mode is checked end to
end: every tile of real photos of odd sizes through both, blended into full maps.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import ModelFileError
from cflnet_sdk.metadata import CONTRACT_KEY, INPUT_NAME, OUTPUT_NAME, PRECISION_KEY
from cflnet_sdk.tiling import TILE_BATCH, TiledImage

HELD_OUT_SEED = 2  # synthetic held-out set; calibration uses seed 1, so they never overlap
# Default pass/fail tolerance on the max absolute probability error, by precision.
DEFAULT_ATOL = {"fp32": 1e-4, "fp16": 1e-2, "int8": 0.1}
# INT8 moves single pixels near a decision by 0.2 or more, and random noise lies outside the
# ranges it was calibrated on, so an INT8 file is judged by what a user of it sees on
# photos: the thresholded masks and the pixel AUC. Its max error is reported, not judged.
INT8_MIN_MASK_IOU = 0.85
INT8_MAX_AUC_CHANGE = 0.01
# Tile-mode probe sizes (height, width): smaller than a tile, and partial tiles at both edges.
ODD_SIZES = ((31, 47), (333, 500), (601, 799))


# -- probe inputs ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probes:
    """Named model inputs (each (N, C, H, W) float32) and, where known, their true masks."""

    name: str
    inputs: list[np.ndarray]
    masks: list[np.ndarray] | None = None


def random_probes(contract: Contract, count: int = 2, batch: int = 1, seed: int = 0) -> Probes:
    rng = np.random.default_rng(seed)
    shape = (batch, contract.channels, *contract.size)
    return Probes("random", [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)])


def photo_probes(contract: Contract, count: int = 4) -> Probes:
    """Packaged natural photos (scikit-image, scikit-learn); random inputs if none installed."""
    from cflnet_sdk.errors import DataError
    from cflnet_sdk.training.data.sources import PhotoSource

    source = PhotoSource()
    try:
        picks = np.linspace(0, len(source) - 1, min(count, len(source))).round().astype(int)
    except DataError:
        return random_probes(contract, count, seed=1)
    return Probes("photos", [contract.preprocess(source.photo(int(i)))[None] for i in picks])


def folder_probes(folder: str | Path, contract: Contract, count: int = 16) -> Probes:
    """The folder's real photos (masks and other files left out), resized."""
    from cflnet_sdk.export.calibration import PhotoFolder

    return Probes(f"images in {folder}", [contract.preprocess(rgb)[None]
                                          for _, rgb in PhotoFolder(folder).photos(count)])


def held_out_probes(contract: Contract, count: int = 16, seed: int = HELD_OUT_SEED) -> Probes:
    """Real photos with synthetic manipulations and their masks (never used for calibration)."""
    from cflnet_sdk.training.data.synth import SynthConfig, SynthDataset

    config = SynthConfig(seed=seed, height=contract.height, width=contract.width,
                         pristine_rate=0.0)
    inputs, masks = [], []
    for sample in SynthDataset(config, length=count):
        inputs.append(contract.preprocess(sample.image)[None])
        masks.append(contract.resize_mask(sample.mask)[None])
    return Probes("held-out synthetic edits", inputs, masks)


def odd_size_photos(folder: str | Path | None = None, count: int = 3) -> list[np.ndarray]:
    """Real photos for tile-mode checks: a folder's images as they are, else crops of the
    largest packaged photo at :data:`ODD_SIZES` (random pixels if no photo is installed)."""
    from cflnet_sdk.errors import DataError
    from cflnet_sdk.training.data.sources import PhotoSource

    if folder:
        from cflnet_sdk.export.calibration import PhotoFolder

        return [rgb for _, rgb in PhotoFolder(folder).photos(count)]
    try:
        source = PhotoSource()
        photo = max((source.photo(i) for i in range(len(source))), key=lambda p: p.size)
    except DataError:
        photo = np.random.default_rng(4).integers(0, 256, (601, 799, 3), dtype=np.uint8)
    return [np.ascontiguousarray(photo[:height, :width]) for height, width in ODD_SIZES]


# -- runners -----------------------------------------------------------------------------------
def torch_runner(model: Any, name: str = "pytorch") -> Any:
    """A polygraphy runner for the PyTorch inference network."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class TorchRunner(BaseRunner):
        def activate_impl(self) -> None:
            from cflnet_sdk.training.model import CFLNetInference

            self.network = CFLNetInference(model).eval()

        def get_input_metadata_impl(self) -> TensorMetadata:
            channels = 3 + model.config.extra_channels
            return TensorMetadata().add(INPUT_NAME, np.float32, (None, channels, None, None))

        def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict:
            import time

            import torch

            start = time.perf_counter()
            with torch.no_grad():
                out = self.network(torch.from_numpy(np.ascontiguousarray(feed_dict[INPUT_NAME])))
            self.inference_time = time.perf_counter() - start
            return OrderedDict([(OUTPUT_NAME, out.numpy())])

        def deactivate_impl(self) -> None:
            del self.network

    return TorchRunner(name=name)


def onnx_runner(path: Path, providers: Sequence[str] = ("cpu",)) -> Any:
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx

    return OnnxrtRunner(SessionFromOnnx(str(path), providers=list(providers)),
                        name=f"onnxruntime:{path.name}")


def engine_runner(path: Path) -> Any:
    """A polygraphy TrtRunner for a cflnet engine, after the header compatibility check."""
    from cflnet_sdk.engine_file import check_engine_header, read_engine
    from cflnet_sdk.export.tensorrt import gpu_identity, import_tensorrt

    trt = import_tensorrt()
    header, plan = read_engine(path)
    if header is not None:
        check_engine_header(header, trt.__version__, gpu_identity(), path)
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    return TrtRunner(EngineFromBytes(plan), name=f"tensorrt:{path.name}")


@dataclass(frozen=True)
class Candidate:
    """A model file to check: its polygraphy runner, contract, precision and largest batch."""

    runner: Any
    contract: Contract
    precision: str
    max_batch: int | None = None  # None: any batch


def open_candidate(path: str | Path, reference_contract: Contract) -> Candidate:
    """Runner, contract and precision of a .onnx, .engine/.plan or .safetensors file."""
    from cflnet_sdk.engine_file import engine_contract, read_engine

    path = Path(path)
    if not path.is_file():
        raise ModelFileError("no such model file", path)
    if path.suffix == ".onnx":
        from cflnet_sdk.export.onnx import load_onnx

        proto = load_onnx(path, load_weights=False)
        meta = {p.key: p.value for p in proto.metadata_props}
        contract = (Contract.from_json(meta[CONTRACT_KEY]) if CONTRACT_KEY in meta
                    else reference_contract)
        batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
        return Candidate(onnx_runner(path), contract, meta.get(PRECISION_KEY, "fp32"),
                         batch.dim_value if batch.HasField("dim_value") else None)
    if path.suffix in (".engine", ".plan"):
        header, _ = read_engine(path)
        contract = engine_contract(header, path) if header else reference_contract
        precision = header.get("precision", "fp32") if header else "fp32"
        profiles = (header or {}).get("profiles") or [{"max": [1]}]
        return Candidate(engine_runner(path), contract, precision, int(profiles[0]["max"][0]))
    if path.suffix == ".safetensors":
        from cflnet_sdk.training.checkpoint import load_checkpoint

        model = load_checkpoint(path)
        return Candidate(torch_runner(model, "pytorch:candidate"), model.contract, "fp32")
    raise ModelFileError("unknown model type; pass a .onnx, .engine/.plan or .safetensors", path)


# -- figures -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Figures:
    """How far a candidate's probability maps are from the reference's on one probe set."""

    probes: str
    images: int
    max_abs: float
    mean_abs: float
    mask_iou: float
    auc_reference: float | None = None
    auc_candidate: float | None = None
    passed: bool = True

    @property
    def auc_diff(self) -> float | None:
        if self.auc_reference is None or self.auc_candidate is None:
            return None
        return self.auc_candidate - self.auc_reference

    def line(self) -> str:
        text = (f"{self.probes} ({self.images} images): max abs error {self.max_abs:.3g}, "
                f"mean abs error {self.mean_abs:.3g}, mask IoU {self.mask_iou:.4f}")
        if self.auc_diff is not None:
            text += (f", pixel AUC {self.auc_reference:.4f} -> {self.auc_candidate:.4f} "
                     f"(diff {self.auc_diff:+.4f})")
        return text + ("" if self.passed else "  FAILED")


def mask_iou(reference: np.ndarray, candidate: np.ndarray, threshold: float) -> float:
    """IoU of the thresholded masks (1.0 when both are empty)."""
    a, b = reference >= threshold, candidate >= threshold
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def mean_pixel_auc(probabilities: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> float:
    """Honest per-image pixel ROC AUC averaged over images with both classes."""
    from sklearn.metrics import roc_auc_score

    scores = [roc_auc_score(m.ravel(), p.ravel()) for p, m in zip(probabilities, masks, strict=True)
              if 0 < m.sum() < m.size]
    return float(np.mean(scores)) if scores else float("nan")


def figures(probes: Probes, reference: list[np.ndarray], candidate: list[np.ndarray],
            threshold: float, passed: bool = True, images: int | None = None) -> Figures:
    """Error figures of two lists of maps; ``images`` defaults to the probe inputs' count."""
    ref, cand = np.concatenate([r.ravel() for r in reference]), np.concatenate(
        [c.ravel() for c in candidate])
    error = np.abs(ref.astype(np.float64) - cand)
    aucs: tuple[float | None, float | None] = (None, None)
    if probes.masks is not None:
        aucs = (mean_pixel_auc(reference, probes.masks), mean_pixel_auc(candidate, probes.masks))
    count = sum(len(x) for x in probes.inputs) if images is None else images
    return Figures(probes.name, count, float(error.max()), float(error.mean()),
                   mask_iou(ref, cand, threshold), *aucs, passed=passed)


def run_both(reference: Any, candidate: Any, probes: Probes, atol: float, rtol: float
             ) -> tuple[list[list[np.ndarray]], bool]:
    """Both runners' outputs on every probe batch, and polygraphy's verdict on them."""
    from polygraphy.comparator import Comparator, CompareFunc
    from polygraphy.logger import G_LOGGER

    feeds = [{INPUT_NAME: batch} for batch in probes.inputs]
    with G_LOGGER.verbosity(G_LOGGER.CRITICAL):
        results = Comparator.run([reference, candidate], data_loader=feeds)
        verdict = Comparator.compare_accuracy(
            results, compare_func=CompareFunc.simple(atol=atol, rtol=rtol))
    outputs = [[np.array(it[OUTPUT_NAME]) for it in iterations] for _, iterations in results]
    return outputs, bool(verdict)


def judge_int8(item: Figures) -> Figures:
    """An INT8 result passes on mask IoU and AUC change against PyTorch, not on max error."""
    auc_kept = item.auc_diff is None or abs(item.auc_diff) <= INT8_MAX_AUC_CHANGE
    return replace(item, passed=item.mask_iou >= INT8_MIN_MASK_IOU and auc_kept)


INT8_RULE = (f"mask IoU >= {INT8_MIN_MASK_IOU}, pixel AUC change <= {INT8_MAX_AUC_CHANGE}; "
             "max error reported only")


def compare(reference: Any, candidate: Any, probes: Probes, threshold: float,
            atol: float, rtol: float = 0.0) -> Figures:
    """Run both runners on ``probes`` with polygraphy and return the error figures."""
    outputs, passed = run_both(reference, candidate, probes, atol, rtol)
    return figures(probes, outputs[0], outputs[1], threshold, passed=passed)


def compare_tiled(reference: Any, candidate: Any, images: Sequence[np.ndarray],
                  contract: Contract, atol: float, rtol: float = 0.0,
                  max_batch: int | None = None) -> Figures:
    """Tile-mode maps of ``images`` from both runners: every tile through each, blended.

    The verdict is polygraphy's on the tiles; the figures are on the blended maps, what a
    user of tile mode gets. Tiles go through in batches of ``TILE_BATCH`` (or the candidate's
    ``max_batch``, if smaller), as the Localizer sends them.
    """
    batch = min(TILE_BATCH, max_batch or TILE_BATCH)
    tiled = [TiledImage(rgb, contract) for rgb in images]
    units = [(number, index) for number, image in enumerate(tiled) for index in range(len(image))]
    chunks = [units[i:i + batch] for i in range(0, len(units), batch)]
    sizes = ", ".join(f"{h}x{w}" for h, w in (rgb.shape[:2] for rgb in images))
    probes = Probes(f"tile mode, real photos {sizes}",
                    [np.stack([tiled[number].input(index) for number, index in chunk])
                     for chunk in chunks])
    outputs, passed = run_both(reference, candidate, probes, atol, rtol)
    maps = []
    for per_runner in outputs:
        canvases = [np.zeros_like(image.canvas) for image in tiled]
        for chunk, output in zip(chunks, per_runner, strict=True):
            for (number, index), probability in zip(chunk, output[:, 0], strict=True):
                tiled[number].grid.blend(canvases[number], index, probability)
        maps.append([np.clip(canvas, 0.0, 1.0) for canvas in canvases])
    return figures(probes, maps[0], maps[1], contract.threshold, passed, images=len(images))
