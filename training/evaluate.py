"""Evaluate any model file on any dataset through ``Localizer``: what a user's deployment sees.

Predictions come from ``cflnet_sdk.Localizer`` (the runtime's preprocessing, any backend) at the
original image size and are scored against the original-size masks with
``cflnet_sdk.training.metrics``. Several models x several datasets give a cross-dataset matrix
like the paper's Table 2. torch is not needed unless a backend needs it.
"""

from __future__ import annotations

import heapq
import io
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cflnet_sdk.errors import CFLNetError, ConfigError
from cflnet_sdk.fileio import atomic_path, write_bytes_atomic
from cflnet_sdk.training.baselines import BASELINES, LABELS, Comparison
from cflnet_sdk.training.metrics import MetricAccumulator, detection

if TYPE_CHECKING:
    from cflnet_sdk.prediction import Prediction
    from cflnet_sdk.training.data.readers import Record

EXAMPLE_SIDE = 256  # examples are kept downsized, so memory stays flat on big datasets
COLUMNS = (  # (metric key, table heading)
    ("images", "images"), ("pixel_auc", "pixel AUC"),
    ("pixel_auc_flip_invariant_paper", "paper AUC (flip-inv.)"),
    ("pooled_pixel_auc", "pooled AUC"), ("pixel_f1", "F1@.5"), ("pixel_iou", "IoU@.5"),
    ("pixel_f1_best", "F1 best"), ("pixel_iou_best", "IoU best"),
    ("best_threshold", "best thr"), ("image_auc", "image AUC"),
    ("pixel_auc_skipped_single_class", "skipped 1-class"), ("skipped_unreadable", "unreadable"))
VERSUS_BASELINES = (  # (metric key, table heading) of a model against the training-free maps
    ("baseline_images", "images"), ("pixel_auc", "model AUC"),
    *((f"{key}_pixel_auc", f"{label} AUC") for key, label in LABELS.items()),
    *((f"beats_{key}", f"beats {label}") for key, label in LABELS.items()))


@dataclass(order=True)
class Example:
    """One image kept for the plots, ordered by its per-image AUC."""

    auc: float
    name: str = field(compare=False)
    rgb: np.ndarray = field(compare=False, repr=False)
    mask: np.ndarray = field(compare=False, repr=False)
    probability: np.ndarray = field(compare=False, repr=False)


class ExampleKeeper:
    """The ``count`` best and worst images by honest per-image AUC, in bounded memory."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.best: list[Example] = []  # min-heap on auc: the smallest of the best is evicted
        self.worst: list[tuple[float, int, Example]] = []  # min-heap on -auc
        self._seen = 0

    def offer(self, name: str, rgb: np.ndarray, mask: np.ndarray, probability: np.ndarray,
              auc: float | None) -> None:
        """Keep the image if its per-image AUC (None: no pixel AUC) is among the extremes."""
        if self.count < 1 or auc is None:
            return
        worth = (len(self.best) < self.count or auc > self.best[0].auc
                 or len(self.worst) < self.count or -auc > self.worst[0][0])
        if not worth:
            return
        example = Example(auc, name, *_shrink(rgb, mask, probability))
        self._seen += 1
        _push(self.best, example, self.count)
        _push(self.worst, (-auc, self._seen, example), self.count)

    def examples(self) -> list[tuple[str, Example]]:
        """``("worst1", e), ("worst2", e), ..., ("best1", e), ...``, worst and best first."""
        worst = sorted((e for _, _, e in self.worst), key=lambda e: e.auc)
        best = sorted(self.best, key=lambda e: -e.auc)
        return ([(f"worst{i}", e) for i, e in enumerate(worst, 1)]
                + [(f"best{i}", e) for i, e in enumerate(best, 1)])


def _push(heap: list, item: Any, limit: int) -> None:
    if len(heap) < limit:
        heapq.heappush(heap, item)
    else:
        heapq.heappushpop(heap, item)


def _shrink(rgb: np.ndarray, mask: np.ndarray, probability: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    height, width = mask.shape
    scale = min(1.0, EXAMPLE_SIDE / max(height, width))
    if scale == 1.0:
        return rgb, mask, probability
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return (np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR)),
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size,
                                                                             Image.NEAREST)) > 127,
            np.asarray(Image.fromarray(probability.astype(np.float32)).resize(size,
                                                                               Image.BILINEAR)))


@dataclass
class Evaluation:
    """The metrics of one model on one dataset."""

    model: str
    data: str
    backend: str
    device: str
    seconds: float
    metrics: dict[str, Any]
    accumulator: MetricAccumulator = field(repr=False)
    examples: ExampleKeeper | None = field(default=None, repr=False)
    baseline: bool = False  # a training-free map (``cflnet_sdk.training.baselines``), no model
    jpeg_quality: int | None = None  # the re-save the data was scored after, if any
    # each evidence of a fused verdict scored on its own ("model (network only)" ...)
    evidence: list[Evaluation] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "data": self.data, "backend": self.backend,
                "device": self.device, "seconds": round(self.seconds, 3),
                "baseline": self.baseline, "jpeg_quality": self.jpeg_quality,
                "metrics": self.metrics}


class KindMetrics:
    """One map source's metrics over a dataset, overall and per manipulation kind.

    Each image is scored once, in its kind's accumulator; the overall numbers are their merge.
    """

    def __init__(self, threshold: float = 0.5, decision: float | None = None) -> None:
        self.threshold, self.decision = threshold, decision
        self.kinds: dict[str, MetricAccumulator] = {}  # "" holds the images without a kind

    def update(self, probability: np.ndarray, mask: np.ndarray, score: float | None,
               kind: str | None, predicted: np.ndarray | None = None) -> float | None:
        """Add one image; return its honest pixel AUC (None if its mask is all one class)."""
        accumulator = self.kinds.setdefault(kind or "", self._accumulator())
        return accumulator.update(probability, mask, score, predicted)

    def _accumulator(self) -> MetricAccumulator:
        return MetricAccumulator(self.threshold, decision=self.decision)

    def overall(self) -> MetricAccumulator:
        total = self._accumulator()
        for accumulator in self.kinds.values():
            total.merge(accumulator)
        return total

    def by_kind(self) -> dict[str, dict[str, Any]]:
        """Every named kind's metrics (manifests name each sample's manipulation)."""
        return {kind: self.kinds[kind].compute() for kind in sorted(self.kinds) if kind}


@dataclass
class BaselineRun:
    """The training-free baselines on one dataset: a row per baseline, and each image's baseline
    AUCs (image path -> baseline key -> AUC) to pair with a model's, computed once per dataset."""

    evaluations: list[Evaluation]
    aucs: dict[str, dict[str, float]]


def _read_mask(record: Record, size: tuple[int, int]) -> np.ndarray:
    from cflnet_sdk.training.data.readers import read_mask

    return (np.zeros(size, bool) if record.mask is None
            else read_mask(record.mask, record.polarity))


def resaved_as_jpeg(image: Path, quality: int) -> bytes | Path:
    """``image`` re-saved as a JPEG at ``quality``, as sharing a photo online does: the same
    forgeries after a compression nobody chose for the model. An unreadable file comes back as
    its path, for the reader to report in its place."""
    from cflnet_sdk.images import load_image

    try:
        rgb = load_image(image)
    except CFLNetError:
        return image
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def data_label(data: str | Path, jpeg_quality: int | None = None) -> str:
    """How results name a dataset, and the re-save it was scored after, if any."""
    return str(data) if jpeg_quality is None else f"{data} (re-saved as JPEG q{jpeg_quality})"


def _source(image: Path, jpeg_quality: int | None) -> bytes | Path:
    return image if jpeg_quality is None else resaved_as_jpeg(image, jpeg_quality)


def evaluate_baselines(data: str | Path, *, data_format: str = "auto",
                       jpeg_quality: int | None = None) -> BaselineRun:
    """Score every map of ``cflnet_sdk.training.baselines`` on ``data`` as a model is scored:
    at the image's own size against its original mask, single-class masks skipped and counted.
    ``jpeg_quality``: score each image re-saved as a JPEG at that quality."""
    from cflnet_sdk.images import load_image
    from cflnet_sdk.prediction import image_score
    from cflnet_sdk.training.data.readers import open_dataset

    dataset = open_dataset(data, format=data_format, on_error="skip")
    unreadable = len(dataset.problems)
    tallies = {key: KindMetrics() for key in BASELINES}
    seconds = dict.fromkeys(BASELINES, 0.0)
    aucs: dict[str, dict[str, float]] = {}
    for record in dataset:
        try:
            rgb = load_image(_source(record.image, jpeg_quality))
            mask = _read_mask(record, rgb.shape[:2])
            image: dict[str, float | None] = {}
            for key, baseline in BASELINES.items():
                start = time.perf_counter()
                found = baseline(rgb)
                image[key] = tallies[key].update(found, mask, image_score(found), record.kind)
                seconds[key] += time.perf_counter() - start
        except CFLNetError:
            unreadable += 1
            continue
        scored = {key: auc for key, auc in image.items() if auc is not None}
        if len(scored) == len(BASELINES):  # none without a two-class mask
            aucs[str(record.image)] = scored
    evaluations = []
    for key, tally in tallies.items():
        accumulator = tally.overall()
        metrics = accumulator.compute() | {"skipped_unreadable": unreadable}
        if kinds := tally.by_kind():
            metrics["by_kind"] = kinds
        evaluations.append(Evaluation(LABELS[key], data_label(data, jpeg_quality),
                                      "training-free", "cpu", seconds[key], metrics,
                                      accumulator, baseline=True, jpeg_quality=jpeg_quality))
    return BaselineRun(evaluations, aucs)


def evaluate(model: str | Path, data: str | Path, *, backend: str = "auto",
             device: str = "auto", data_format: str = "auto", batch_size: int = 8,
             examples: int = 0, baselines: BaselineRun | None = None,
             mode: str | None = None, jpeg_quality: int | None = None,
             each: Callable[[Record, Prediction], None] | None = None) -> Evaluation:
    """Predict every image of ``data`` with ``model`` and score it against its mask.

    Beside the model's metrics, overall and per kind: each training-free baseline's mean AUC on
    the same images and the share of images the model beats it on (``Comparison``).
    ``baselines`` (``evaluate_baselines`` of the same data) is computed here when not given.
    ``mode`` ("resize" or "tile") overrides the model's contract. ``jpeg_quality``: score each
    image re-saved as a JPEG at that quality (``resaved_as_jpeg``). ``each`` sees every scored
    image's prediction, for comparisons between models that no single model's metrics hold.
    """
    from cflnet_sdk.localizer import Localizer
    from cflnet_sdk.training.data.readers import open_dataset

    if baselines is None:
        baselines = evaluate_baselines(data, data_format=data_format, jpeg_quality=jpeg_quality)
    dataset = open_dataset(data, format=data_format, on_error="skip")
    start = time.perf_counter()
    unreadable = len(dataset.problems)
    keeper = ExampleKeeper(examples) if examples else None
    comparisons: dict[str, Comparison] = defaultdict(Comparison)  # "" = every image
    with Localizer(model, backend=backend, device=device,
                   mode=mode) as localizer:  # type: ignore[arg-type]
        tally = KindMetrics(localizer.threshold, localizer.decision_threshold)
        parts: dict[str, KindMetrics] = {}  # evidence name -> its own metrics
        results = localizer.predict_iter((_source(r.image, jpeg_quality) for r in dataset),
                                         batch_size, errors="return")
        for record, result in zip(dataset, results, strict=True):
            try:
                if isinstance(result, CFLNetError):
                    raise result
                mask = _read_mask(record, result.size)
                auc = tally.update(result.probability, mask, result.score, record.kind,
                                   result.mask)
                for part, (found, score, decision) in evidence_of(result, localizer).items():
                    shown = found >= localizer.threshold if score >= decision else \
                        np.zeros(found.shape, bool)  # each evidence's own verdict and mask
                    parts.setdefault(part, KindMetrics(localizer.threshold, decision)).update(
                        found, mask, score, record.kind, shown)
            except CFLNetError:
                unreadable += 1
                continue
            for group in {"", record.kind or ""}:
                comparisons[group].add(auc, baselines.aucs.get(str(record.image)))
            if keeper is not None and result.image is not None:
                keeper.offer(record.image.name, result.image, mask, result.probability, auc)
            if each is not None:
                each(record, result)
        name, used = localizer.backend_name, localizer.device
    accumulator = tally.overall()
    metrics = (accumulator.compute() | {"skipped_unreadable": unreadable}
               | comparisons[""].compute())
    if kinds := tally.by_kind():
        metrics["by_kind"] = {kind: values | comparisons[kind].compute()
                              for kind, values in kinds.items()}
    seconds = time.perf_counter() - start
    evidence = [Evaluation(f"{model} ({part} only)", data_label(data, jpeg_quality), name, used,
                           seconds, part_tally.overall().compute(), part_tally.overall(),
                           jpeg_quality=jpeg_quality) for part, part_tally in parts.items()]
    return Evaluation(str(model), data_label(data, jpeg_quality), name, used, seconds, metrics,
                      accumulator, keeper, jpeg_quality=jpeg_quality, evidence=evidence)


def evidence_of(result: Prediction, localizer: Any
                ) -> dict[str, tuple[np.ndarray, float, float]]:
    """Each evidence of a fused verdict on its own: name -> (map, score, operating point)."""
    if result.copy_move is None or result.network_score is None:
        return {}
    return {"network": (result.evidence["network"], result.network_score,
                        localizer.decision_threshold),
            "copy-move": (result.evidence["copy-move"], result.copy_move.score,
                          localizer.copy_move_threshold)}


def detection_rows(evaluations: list[Evaluation]) -> list[dict[str, Any]]:
    """Image-level detection of every dataset's forged images against every dataset's unedited
    ones (the same dataset's too), per model or baseline and per re-save: a false alarm on a
    photo nobody edited is what a localizer is judged on first, and the pixel AUC skips them."""
    rows = []
    for e in evaluations:
        if not e.accumulator.tampered_images:
            continue
        for other in evaluations:
            if (other.model, other.jpeg_quality) != (e.model, e.jpeg_quality) or \
                    other.accumulator.images == other.accumulator.tampered_images:
                continue
            found = detection(e.accumulator.scores_of(True), other.accumulator.scores_of(False),
                              e.accumulator.decision)
            if found["forged_images"] and found["unedited_images"]:
                rows.append({"model": e.model, "forged": e.data, "unedited": other.data,
                             "baseline": e.baseline,
                             "unedited_mask_fraction":
                                 other.metrics.get("unedited_mask_fraction"), **found})
    return rows


def write_json(evaluations: list[Evaluation], path: str | Path) -> None:
    """All results plus the honest per-image AUC matrix (models x datasets)."""
    document = {"results": [e.to_dict() for e in evaluations], "matrix": matrix(evaluations),
                "detection": detection_rows(evaluations)}
    write_bytes_atomic(path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))


def matrix(evaluations: list[Evaluation], key: str = "pixel_auc") -> dict[str, Any]:
    models = list(dict.fromkeys(e.model for e in evaluations))
    datasets = list(dict.fromkeys(e.data for e in evaluations))
    table = {(e.model, e.data): e.metrics.get(key) for e in evaluations}
    return {"metric": key, "models": models, "datasets": datasets,
            "values": [[table.get((m, d)) for d in datasets] for m in models]}


def short_names(paths: list[str]) -> dict[str, str]:
    """The shortest trailing part of each path that tells it apart from the others
    (``runs/a/best.safetensors`` and ``runs/b/best.safetensors`` -> ``a/best.safetensors``)."""
    parts = {p: Path(p).parts or (p,) for p in dict.fromkeys(paths)}
    for depth in range(1, max(len(v) for v in parts.values()) + 1):
        names = {p: "/".join(v[-depth:]) for p, v in parts.items()}
        if len(set(names.values())) == len(names):
            return names
    return {p: p for p in parts}


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}" if key == "best_threshold" else f"{100 * value:.1f}"
    return str(value)


def render_tables(evaluations: list[Evaluation]) -> list[Any]:
    """rich Tables: every metric per (model, data) and per kind, each model against the
    training-free baselines, then the AUC matrix if there are several models or datasets."""
    from rich.table import Table

    results = Table(title="CFL-Net evaluation (AUC, F1, IoU in %; pixel AUC = honest per-image "
                          "mean, the headline; paper AUC = max(AUC, 1-AUC) per image)")
    results.add_column("model")
    results.add_column("data")
    for _, heading in COLUMNS:
        results.add_column(heading, justify="right")
    models = short_names([e.model for e in evaluations])
    datasets = short_names([e.data for e in evaluations])
    for e in evaluations:
        results.add_row(models[e.model], datasets[e.data],
                        *(_cell(k, e.metrics.get(k)) for k, _ in COLUMNS))
    tables = [results]
    for e in evaluations:
        if len(e.metrics.get("by_kind", {})) > 1:
            kinds = Table(title=f"{models[e.model]} on {datasets[e.data]}, per kind")
            kinds.add_column("kind")
            for _, heading in COLUMNS:
                kinds.add_column(heading, justify="right")
            for kind, values in e.metrics["by_kind"].items():
                kinds.add_row(kind, *(_cell(k, values.get(k)) for k, _ in COLUMNS))
            tables.append(kinds)
    if trained := [e for e in evaluations if not e.baseline]:
        tables.append(versus_baselines_table(trained, models, datasets))
    if rows := detection_rows(evaluations):
        tables.append(detection_table(rows, models, datasets))
    grid = matrix(evaluations)
    if len({e.model for e in trained}) > 1 or len(grid["datasets"]) > 1:
        cross = Table(title="Cross-dataset matrix: honest per-image pixel AUC (%)")
        cross.add_column("model \\ data")
        for name in grid["datasets"]:
            cross.add_column(datasets[name], justify="right")
        for name, row in zip(grid["models"], grid["values"], strict=True):
            cross.add_row(models[name], *(_cell("pixel_auc", v) for v in row))
        tables.append(cross)
    return tables


def _table(title: str, labels: tuple[str, ...], columns: tuple[tuple[str, str], ...]) -> Any:
    """A rich Table: text columns ``labels``, then right-aligned figure ``columns``."""
    from rich.table import Table

    table = Table(title=title)
    for heading in labels:
        table.add_column(heading)
    for _, heading in columns:
        table.add_column(heading, justify="right")
    return table


def versus_baselines_table(evaluations: list[Evaluation], models: dict[str, str],
                           datasets: dict[str, str]) -> Any:
    """Each model's per-image AUC beside each baseline's on the same images, and the share of
    those images where the model's is strictly higher; per kind too where there are several."""
    table = _table("Against training-free baselines (honest per-image pixel AUC, %; beats = "
                   "share of images where the model's AUC is higher, %)",
                   ("model", "data", "kind"), VERSUS_BASELINES)
    for e in evaluations:
        kinds = e.metrics.get("by_kind", {})
        groups = [("all", e.metrics), *(kinds.items() if len(kinds) > 1 else ())]
        for kind, values in groups:
            table.add_row(models[e.model], datasets[e.data], kind,
                          *(_cell(k, values.get(k)) for k, _ in VERSUS_BASELINES))
    return table


DETECTION_COLUMNS = (  # (key, heading) of a detection row
    ("forged_images", "forged"), ("unedited_images", "unedited"),
    ("detection_auc", "detection AUC"), ("detected_at_fa", "detected @5% FA"),
    ("detection_rate", "detected @decision"), ("false_alarm_rate", "false alarms @decision"),
    ("unedited_mask_fraction", "unedited px in mask"))


def detection_table(rows: list[dict[str, Any]], models: dict[str, str],
                    datasets: dict[str, str]) -> Any:
    """Forged against unedited images, per model and baseline (``detection_rows``)."""
    table = _table("Image-level detection: forged vs unedited photos (%; a false alarm is an "
                   "unedited photo called tampered; baselines score the top 1% of their map and "
                   "have no operating point)", ("model", "forged data", "unedited data"),
                   DETECTION_COLUMNS)
    for row in rows:
        table.add_row(models[row["model"]], datasets[row["forged"]], datasets[row["unedited"]],
                      *(_cell(k, row.get(k)) for k, _ in DETECTION_COLUMNS))
    return table


def write_plots(evaluations: list[Evaluation], folder: str | Path) -> list[Path]:
    """``roc.png`` (pooled pixel ROC of every pair) and worst/best example panels."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("--plots needs matplotlib: pip install matplotlib (or drop --plots)"
                          ) from exc
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    models = short_names([e.model for e in evaluations])
    datasets = short_names([e.data for e in evaluations])
    figure, axes = plt.subplots(figsize=(5.5, 5))
    for e in evaluations:
        fpr, tpr = roc_points(e.accumulator)
        auc = e.metrics.get("pooled_pixel_auc")
        axes.plot(fpr, tpr, label=f"{models[e.model]} / {datasets[e.data]} "
                                  f"(pooled AUC {_cell('auc', auc)})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axes.set(xlabel="false positive rate (pixels)", ylabel="true positive rate (pixels)",
             title="Pooled pixel ROC", xlim=(0, 1), ylim=(0, 1))
    axes.legend(fontsize=7, loc="lower right")
    written = [folder / "roc.png"]
    with atomic_path(written[0]) as tmp:
        figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    for e in evaluations:
        if e.examples is None:
            continue
        pair = f"{models[e.model]}_{datasets[e.data]}".replace("/", "-")
        for which, example in e.examples.examples():
            name = f"{pair}_{which}_auc{example.auc:.3f}_{Path(example.name).stem}.png"
            written.append(folder / name)
            with atomic_path(written[-1]) as tmp:
                example_panel(example).save(tmp, format="PNG")
    return written


def roc_points(accumulator: MetricAccumulator) -> tuple[np.ndarray, np.ndarray]:
    """Pooled ROC from the accumulator's histograms (threshold sweeping from 1 down to 0)."""
    positive = np.concatenate([[0], np.cumsum(accumulator.positive[::-1])])
    negative = np.concatenate([[0], np.cumsum(accumulator.negative[::-1])])
    return negative / max(negative[-1], 1), positive / max(positive[-1], 1)


def example_panel(example: Example) -> Image.Image:
    """Image | ground truth | probability | predicted mask outline, side by side."""
    rgb = example.rgb
    truth = np.repeat(example.mask[..., None].astype(np.uint8) * 255, 3, axis=2)
    heat = np.repeat(np.clip(example.probability * 255 + 0.5, 0, 255).astype(np.uint8)[..., None],
                     3, axis=2)
    overlay = rgb.copy()
    predicted = example.probability >= 0.5
    overlay[predicted] = (0.55 * overlay[predicted] + 0.45 * np.array([255, 0, 0])).astype(
        np.uint8)
    gap = np.full((rgb.shape[0], 4, 3), 255, np.uint8)
    return Image.fromarray(np.concatenate([rgb, gap, truth, gap, heat, gap, overlay], axis=1))
