"""The precision-variant table, as Markdown for docs and JSON for tools.

One row per file: size, speed and speed-up over torch eager, honest per-image AUC, its change
against the fp32 file and the mask IoU with it, beside the centre prior (DESIGN section 6: every
accuracy figure stands beside it). The report also names the fastest variant whose AUC stays
within ``MAX_AUC_CHANGE`` of fp32, which is the one a CPU deployment should use.
"""

from __future__ import annotations

import datetime
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cflnet_sdk.export.calibration import Calibration
from cflnet_sdk.export.precision import INT8_TARGETS, Int8Recipe
from cflnet_sdk.export.variants import TORCH, Measured

MAX_AUC_CHANGE = 0.005
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")  # what INT8 speed hangs on


def describe_machine() -> str:
    """CPU model, usable cores, the INT8-relevant instruction sets and library versions."""
    from cflnet_sdk.runtime.base import cpu_count

    name, flags = platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    versions = []
    for module in ("onnxruntime", "torch"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except ImportError:
            continue
    isa = "/".join(f for f in CPU_FLAGS if f in flags) or "no AVX2"
    return f"{name}, {cpu_count()} cores ({isa}), Python {platform.python_version()}, " + \
        ", ".join(versions)


@dataclass
class VariantsReport:
    """Everything the table says, and how it was made."""

    command: str
    data: str
    calibration: Calibration
    rows: list[Measured]
    prior: dict[str, Any]  # the centre prior's metrics on the same data
    recipe: Int8Recipe
    tile: bool
    megapixels: float
    date: str = field(default_factory=lambda: datetime.date.today().isoformat())
    machine: str = field(default_factory=describe_machine)

    @property
    def unit(self) -> str:
        return "ms/MP" if self.tile else "ms/image"

    def row(self, name: str) -> Measured:
        return next(r for r in self.rows if r.name == name)

    def auc_change(self, row: Measured) -> float | None:
        fp32 = self.row("fp32").auc
        return None if row.auc is None or fp32 is None else row.auc - fp32

    def speedup(self, row: Measured) -> float | None:
        torch = self.row(TORCH).ms
        return None if not row.ms or not torch else torch / row.ms

    def fastest_within(self, limit: float = MAX_AUC_CHANGE) -> Measured | None:
        """The fastest ONNX file whose AUC is within ``limit`` of fp32's (either way)."""
        fitting = [r for r in self.rows if r.name != TORCH and r.ms is not None
                   and (change := self.auc_change(r)) is not None and abs(change) <= limit]
        return min(fitting, key=lambda r: r.ms or 0.0, default=None)

    def to_json(self) -> dict[str, Any]:
        best = self.fastest_within()
        return {
            "command": self.command, "date": self.date, "machine": self.machine,
            "data": self.data, "mode": "tile" if self.tile else "resize", "unit": self.unit,
            "int8": {"method": self.recipe.method,
                     "kept_float32": {t: list(self.recipe.groups(t)) for t in INT8_TARGETS}},
            "calibration": {"photos": [str(p) for p in self.calibration.photos],
                            "inputs": len(self.calibration.inputs),
                            "skipped": [{"file": str(p), "why": why}
                                        for p, why in self.calibration.skipped]},
            "centre_prior_pixel_auc": self.prior.get("pixel_auc"),
            "fastest_within_auc_change": {"limit": MAX_AUC_CHANGE,
                                          "variant": best.name if best else None,
                                          "file": str(best.path) if best else None},
            "rows": [{"variant": r.name, "file": str(r.path), "precision": r.precision,
                      "backend": r.backend, "size_mb": r.path.stat().st_size / 1e6,
                      "ms": r.ms, "speedup_vs_torch_eager": self.speedup(r),
                      "pixel_auc": r.auc, "auc_change_vs_fp32": self.auc_change(r),
                      "mask_iou_vs_fp32": r.mask_iou, "beats_centre_prior": r.beats_prior,
                      "evaluation": r.evaluation, "timing": r.timing} for r in self.rows]}

    def markdown(self) -> str:
        """The table with the command, date, machine and what each column means."""
        order = [self.row(TORCH)] + [r for r in self.rows if r.name != TORCH]
        speed = (f"end-to-end `predict` of a {self.megapixels:g} MP JPEG in tile mode, per "
                 "megapixel" if self.tile else "model call at batch 1 (p50)")
        lines = [
            f"```\n{self.command}\n```", "",
            f"{self.date}, {self.machine}. Accuracy on `{self.data}` "
            f"({self.row('fp32').evaluation['metrics'].get('images')} images) through "
            f"`Localizer`: honest per-image pixel AUC; mask IoU: mean over images of the IoU "
            f"between the file's masks and the fp32 file's. Speed: {speed}, every file timed "
            f"in one interleaved run. INT8: {self.recipe.method} ranges from "
            f"{len(self.calibration.inputs)} inputs of {len(self.calibration.photos)} real "
            f"photos, none of them in the evaluation data "
            f"({len(self.calibration.skipped)} files skipped, listed in variants.json); layer "
            "groups kept float32: " + "; ".join(
                f"{t} {', '.join(self.recipe.groups(t)) or 'none'}" for t in INT8_TARGETS) + ".",
            "",
            f"| variant | file | MB | {self.unit} | speed-up vs torch eager | pixel AUC "
            "| AUC change vs fp32 | mask IoU vs fp32 | beats centre prior |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in order:
            lines.append(
                f"| {f'{r.name} ({r.precision})' if r.name == TORCH else r.name} | "
                f"`{r.path.name}` | "
                f"{r.path.stat().st_size / 1e6:.1f} | {_number(r.ms, '.1f')} | "
                f"{_number(self.speedup(r), '.2f', 'x')} | {_number(r.auc, '.3f')} | "
                f"{_number(self.auc_change(r), '+.4f')} | {_number(r.mask_iou, '.3f')} | "
                f"{_number(r.beats_prior and 100 * r.beats_prior, '.1f', '%')} |")
        lines.append(f"| centre prior (no model) | | | | | "
                     f"{_number(self.prior.get('pixel_auc'), '.3f')} | | | |")
        best = self.fastest_within()
        lines += ["", f"Fastest variant within {MAX_AUC_CHANGE} AUC of fp32: "
                      + (f"**{best.name}** (`{best.path.name}`)." if best else "none.")]
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> tuple[Path, Path]:
        """``variants.md`` and ``variants.json`` in ``folder``."""
        from cflnet_sdk.fileio import write_bytes_atomic

        markdown, document = folder / "variants.md", folder / "variants.json"
        write_bytes_atomic(markdown, self.markdown().encode("utf-8"))
        write_bytes_atomic(document, (json.dumps(self.to_json(), indent=2) + "\n").encode())
        return markdown, document


def _number(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"
