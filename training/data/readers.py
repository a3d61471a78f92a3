"""Readers for forgery datasets: every layout becomes one list of ``Record``.

Supported: a manifest (JSON lines or CSV), paired ``Tp/`` + ``Gt/`` folders, IMD2020, CASIA v2,
NIST16, Columbia and COVERAGE. Pairing problems (a missing or unreadable mask, a mask whose size
differs from its image) are reported by file name, raised or skipped by ``on_error``, never
left to become a silently misaligned training pair. Torch-free.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

import numpy as np
from PIL import Image, UnidentifiedImageError

from cflnet_sdk.errors import CFLNetError, DataError
from cflnet_sdk.images import load_image

Polarity = Literal["white", "black", "green"]  # colour of the TAMPERED pixels in the mask file
OnError = Literal["raise", "skip"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv", "manifest.json")


@dataclass(frozen=True)
class Record:
    """One image and where its ground truth is. ``mask`` None means pristine."""

    image: Path
    mask: Path | None = None
    kind: str | None = None
    polarity: Polarity = "white"


@dataclass(frozen=True)
class Problem:
    """A file that cannot be used, and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def read_mask(path: Path, polarity: Polarity = "white") -> np.ndarray:
    """A mask file as bool HxW, tampered = True, whatever the dataset's colour convention."""
    try:
        rgb = load_image(path).astype(np.int16)
    except CFLNetError as exc:
        raise DataError(f"unreadable mask ({exc}); re-export or remove the pair", path) from exc
    if polarity == "green":  # Columbia edgemask: green = spliced region, red = authentic;
        # JPEG-coded, so decide by which of the two colours dominates, not by exact values.
        return (rgb[..., 1] > rgb[..., 0]) & (rgb[..., 1] > 64)
    gray = rgb.mean(axis=2)
    return gray < 128 if polarity == "black" else gray > 127


def _header_size(path: Path) -> tuple[int, int]:
    """(height, width) as ``load_image`` will decode it (EXIF rotation included), cheaply."""
    with Image.open(path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1)
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def _size_or_reason(path: Path, what: str) -> tuple[int, int] | str:
    """The decoded size of ``path``, or why it cannot be read (``what`` names its role)."""
    if not path.is_file():
        return f"{what} {path} does not exist"
    try:
        return _header_size(path)
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        return f"{what} {path} is unreadable ({exc})"


def check_record(record: Record) -> str | None:
    """Why ``record`` is unusable (missing, unreadable, size mismatch), or None if it looks fine.

    Reads headers only, so checking a whole dataset costs seconds, not a full decode.
    """
    size = _size_or_reason(record.image, "image")
    if isinstance(size, str) or record.mask is None:
        return size if isinstance(size, str) else None
    mask_size = _size_or_reason(record.mask, f"mask of {record.image.name}:")
    if isinstance(mask_size, str):
        return mask_size
    if mask_size != size:
        return (f"mask {record.mask.name} is {mask_size[1]}x{mask_size[0]} but image "
                f"{record.image.name} is {size[1]}x{size[0]}")
    return None


class ForgeryDataset(Sequence[Record]):
    """A checked list of records plus the problems found while reading it.

    ``load(i)`` decodes with ``cflnet_sdk.images.load_image`` (the runtime's decoder) and
    returns ``(rgb uint8 HxWx3, mask bool HxW)``; a pristine image gets an all-False mask.
    """

    def __init__(self, records: Iterable[Record], problems: Iterable[Problem] = (),
                 name: str = "") -> None:
        self.records = list(records)
        self.problems = list(problems)
        self.name = name

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Record: ...
    @overload
    def __getitem__(self, index: slice) -> ForgeryDataset: ...
    def __getitem__(self, index: int | slice) -> Record | ForgeryDataset:
        if isinstance(index, slice):
            return ForgeryDataset(self.records[index], name=self.name)
        return self.records[index]

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        record = self.records[index]
        rgb = load_image(record.image)
        if record.mask is None:
            return rgb, np.zeros(rgb.shape[:2], dtype=bool)
        mask = read_mask(record.mask, record.polarity)
        if mask.shape != rgb.shape[:2]:
            raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]} but image "
                            f"{record.image.name} is {rgb.shape[1]}x{rgb.shape[0]}; fix or "
                            "drop the pair", record.mask)
        return rgb, mask

    def split(self, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 1221,
              ) -> tuple[ForgeryDataset, ...]:
        """Deterministic random split (by seed, independent of listing order)."""
        if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
            raise DataError(f"split fractions {tuple(fractions)} must be >= 0 and sum to 1")
        ordered = sorted(self.records, key=lambda r: str(r.image))
        order = np.random.default_rng(seed).permutation(len(ordered))
        bounds = np.rint(np.cumsum([0.0, *fractions]) * len(ordered)).astype(int)
        return tuple(ForgeryDataset([ordered[i] for i in order[lo:hi]], name=self.name)
                     for lo, hi in itertools.pairwise(bounds))


def validate(records: Iterable[Record], on_error: OnError = "raise", name: str = "",
             extra: Iterable[Problem] = ()) -> ForgeryDataset:
    """Check every record; raise on the first problem or keep the good ones and list the rest."""
    if on_error not in ("raise", "skip"):
        raise DataError(f"on_error {on_error!r} is not 'raise' or 'skip'")
    problems = list(extra)
    if problems and on_error == "raise":
        raise DataError(f"{problems[0].message}; pass on_error='skip' to drop such pairs",
                        problems[0].path)
    kept = []
    for record in records:
        reason = check_record(record)
        if reason is None:
            kept.append(record)
            continue
        if on_error == "raise":
            raise DataError(f"{reason}; fix the pair or pass on_error='skip' to drop it",
                            record.image)
        problems.append(Problem(str(record.image), reason))
    return ForgeryDataset(kept, problems, name)


# -- file helpers ---------------------------------------------------------------------------
def _images(folder: Path, recursive: bool = False) -> list[Path]:
    if not folder.is_dir():
        return []
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _find_mask(folder: Path, stem: str, suffixes: Sequence[str]) -> Path | None:
    for suffix in suffixes:
        for candidate in sorted(folder.glob(f"{stem}{suffix}.*")):
            if candidate.suffix.lower() in IMAGE_SUFFIXES:
                return candidate
    return None


def _subdir(root: Path, *names: str) -> Path | None:
    """The first child of ``root`` whose name matches one of ``names`` (case-insensitive)."""
    wanted = [n.lower() for n in names]
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    return next((children[n] for n in wanted if n in children), None)


def _pair_folders(tampered: Path, masks: Path, suffixes: Sequence[str], kind: str | None,
                  polarity: Polarity, pristine: Path | None = None,
                  ) -> tuple[list[Record], list[Problem]]:
    """Pair each image in ``tampered`` with ``masks/<stem><suffix>.*``; ``pristine`` has none."""
    records, problems = [], []
    for image in _images(tampered):
        mask = _find_mask(masks, image.stem, suffixes)
        if mask is None:
            problems.append(Problem(str(image), f"no mask {image.stem}{suffixes[0]}.* in {masks}"))
        else:
            records.append(Record(image, mask, kind, polarity))
    if pristine is not None:
        records += [Record(image, None, "pristine") for image in _images(pristine)]
    return records, problems


# -- the readers ----------------------------------------------------------------------------
def read_manifest(path: str | Path, on_error: OnError = "raise") -> ForgeryDataset:
    """JSON lines or CSV with ``image``, ``mask`` (absent/empty/null = pristine), ``kind``.

    Relative paths resolve against the manifest's folder; a folder holding a manifest works too.
    """
    path = Path(path)
    if path.is_dir():
        found = next((path / n for n in MANIFEST_NAMES if (path / n).is_file()), None)
        if found is None:
            raise DataError(f"no {' or '.join(MANIFEST_NAMES)} in this folder", path)
        path = found
    if not path.is_file():
        raise DataError("manifest does not exist", path)
    rows = _manifest_rows(path)
    records, problems = [], []
    for number, row in rows:
        image = row.get("image")
        if not image:
            problems.append(Problem(f"{path}:{number}", "row has no 'image'"))
            continue
        mask = row.get("mask") or None
        polarity = row.get("polarity") or "white"
        if polarity not in ("white", "black", "green"):
            problems.append(Problem(f"{path}:{number}", f"polarity {polarity!r} is not "
                                    "white, black or green"))
            continue
        records.append(Record(path.parent / image, None if mask is None else path.parent / mask,
                              row.get("kind") or None, polarity))
    return validate(records, on_error, path.stem, problems)


def _manifest_rows(path: Path) -> list[tuple[int, dict]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        return list(enumerate(csv.DictReader(text.splitlines()), start=2))
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise DataError(f"line {number} is not JSON ({exc}); write one object per line",
                            path) from exc
        if not isinstance(row, dict):
            raise DataError(f"line {number} is not a JSON object with an 'image' key", path)
        rows.append((number, row))
    return rows


def read_paired(root: str | Path, on_error: OnError = "raise") -> ForgeryDataset:
    """``Tp/<name>.*`` with ``Gt/<name>.*`` (or ``<name>_gt``/``<name>_mask``); ``Au/`` pristine."""
    root = Path(root)
    tampered, masks = _subdir(root, "Tp"), _subdir(root, "Gt")
    if tampered is None or masks is None:
        raise DataError("paired layout needs Tp/ and Gt/ folders", root)
    records, problems = _pair_folders(tampered, masks, ("", "_gt", "_mask"), None, "white",
                                      _subdir(root, "Au"))
    return validate(records, on_error, root.name, problems)


def read_casia(root: str | Path, gt_dir: str | Path | None = None,
               on_error: OnError = "raise") -> ForgeryDataset:
    """CASIA v2: ``Tp/<name>.jpg|tif`` with ``<name>_gt.png`` in a ground-truth folder."""
    root = Path(root)
    tampered = _subdir(root, "Tp")
    if tampered is None:
        raise DataError("CASIA layout needs a Tp/ folder", root)
    masks = Path(gt_dir) if gt_dir else next(
        (d for d in sorted(root.iterdir()) if d.is_dir() and any(d.glob("*_gt.png"))), None)
    if masks is None:
        raise DataError("no ground-truth folder with *_gt.png files; pass gt_dir", root)
    records, problems = _pair_folders(tampered, masks, ("_gt",), None, "white",
                                      _subdir(root, "Au"))
    for i, record in enumerate(records):
        if record.mask is not None:  # Tp_D_* = spliced from a different image, Tp_S_* = same
            kind = {"D": "splice", "S": "copy-move"}.get(record.image.name[3:4])
            records[i] = Record(record.image, record.mask, kind, "white")
    return validate(records, on_error, root.name, problems)


def read_imd2020(root: str | Path, list_file: str | Path | None = None,
                 include_pristine: bool = False, on_error: OnError = "raise") -> ForgeryDataset:
    """IMD2020: ``<id>_0.jpg`` with ``<id>_0_mask.png`` beside it, in one folder per source.

    ``list_file`` (the authors' train/val/test lists) keeps only the images it names: one per
    line, a path relative to ``root`` or a bare file name, optionally followed by a mask path.
    """
    root = Path(root)
    records, problems = [], []
    for image in _images(root, recursive=True):
        if image.stem.endswith("_0"):
            records.append(Record(image, image.with_name(f"{image.stem}_mask.png"), None))
        elif include_pristine and image.stem.endswith("_orig"):
            records.append(Record(image, None, "pristine"))
    if not records:
        raise DataError("no IMD2020 images (*_0.jpg with *_0_mask.png) found", root)
    if list_file is not None:
        records, problems = _select_listed(records, Path(list_file), root)
    return validate(records, on_error, root.name, problems)


def _select_listed(records: list[Record], list_file: Path, root: Path,
                   ) -> tuple[list[Record], list[Problem]]:
    if not list_file.is_file():
        raise DataError("split list file does not exist", list_file)
    by_path = {r.image.resolve(): r for r in records}
    by_name = {r.image.name: r for r in records}
    chosen, problems = [], []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        fields = line.replace(",", " ").split()
        if not fields or fields[0].startswith("#"):
            continue
        record = by_path.get((root / fields[0]).resolve()) or by_name.get(Path(fields[0]).name)
        if record is None:
            problems.append(Problem(f"{list_file}:{number}", f"listed image {fields[0]} not "
                                    f"found under {root}"))
        elif len(fields) > 1:
            chosen.append(Record(record.image, root / fields[1], record.kind, record.polarity))
        else:
            chosen.append(record)
    return chosen, problems


def read_nist16(root: str | Path, on_error: OnError = "raise") -> ForgeryDataset:
    """NIST16 (NC2016): masks mark manipulated pixels BLACK; read with polarity "black".

    Uses the reference CSV (``*-ref.csv``, ``|``-separated, ``ProbeFileName``,
    ``ProbeMaskFileName``, ``IsTarget``) when present, else pairs ``probe/`` with ``mask/``.
    """
    root = Path(root)
    references = sorted(root.rglob("*manipulation-ref.csv")) or sorted(root.rglob("*-ref.csv"))
    if references:
        records = []
        for reference in references:
            base = root if (root / "probe").is_dir() else reference.parent
            rows = csv.DictReader(reference.read_text().splitlines(), delimiter="|")
            for row in rows:
                probe, mask = row.get("ProbeFileName"), row.get("ProbeMaskFileName")
                target = row.get("IsTarget", "Y").upper() == "Y" and mask
                records.append(Record(base / probe, base / mask if target else None,
                                      None if target else "pristine", "black"))
        return validate(records, on_error, root.name)
    probes, masks = _subdir(root, "probe"), _subdir(root, "mask")
    if probes is None or masks is None:
        raise DataError("NIST16 layout needs a *-ref.csv or probe/ and mask/ folders", root)
    records, problems = _pair_folders(probes, masks, ("", "_mask", "-mask"), None, "black")
    return validate(records, on_error, root.name, problems)


def read_columbia(root: str | Path, on_error: OnError = "raise") -> ForgeryDataset:
    """Columbia uncompressed splicing: ``4cam_splc/<name>.tif`` with
    ``edgemask/<name>_edgemask.jpg``, green = spliced region (red = the host camera's part);
    ``4cam_auth/`` pristine."""
    root = Path(root)
    spliced = _subdir(root, "4cam_splc")
    if spliced is None:
        raise DataError("Columbia layout needs a 4cam_splc/ folder", root)
    masks = _subdir(spliced, "edgemask") or _subdir(root, "edgemask") or spliced
    records, problems = _pair_folders(spliced, masks, ("_edgemask",), "splice", "green",
                                      _subdir(root, "4cam_auth"))
    return validate(records, on_error, root.name, problems)


def read_coverage(root: str | Path, on_error: OnError = "raise") -> ForgeryDataset:
    """COVERAGE: ``image/<n>t.tif`` with ``mask/<n>forged.tif``; ``image/<n>.tif`` pristine."""
    root = Path(root)
    images, masks = _subdir(root, "image"), _subdir(root, "mask")
    if images is None or masks is None:
        raise DataError("COVERAGE layout needs image/ and mask/ folders", root)
    records, problems = [], []
    for image in _images(images):
        if not image.stem.endswith("t"):
            records.append(Record(image, None, "pristine"))
            continue
        mask = _find_mask(masks, f"{image.stem[:-1]}forged", ("",))
        if mask is None:
            problems.append(Problem(str(image), f"no mask {image.stem[:-1]}forged.* in {masks}"))
        else:
            records.append(Record(image, mask, "copy-move"))
    return validate(records, on_error, root.name, problems)


READERS: dict[str, Callable[..., ForgeryDataset]] = {
    "manifest": read_manifest, "paired": read_paired, "imd2020": read_imd2020,
    "casia": read_casia, "nist16": read_nist16, "columbia": read_columbia,
    "coverage": read_coverage,
}


def detect_format(path: Path) -> str:
    """Guess the layout of ``path`` from its files."""
    if path.is_file() or any((path / n).is_file() for n in MANIFEST_NAMES):
        return "manifest"
    if not path.is_dir():
        raise DataError("no such dataset file or folder", path)
    names = {p.name.lower() for p in path.iterdir()}
    if "4cam_splc" in names:
        return "columbia"
    if {"image", "mask"} <= names:
        return "coverage"
    if "probe" in names or any(path.rglob("*-ref.csv")):
        return "nist16"
    if "tp" in names and "gt" in names:
        return "paired"
    if "tp" in names:
        return "casia"
    if any(path.rglob("*_0_mask.png")):
        return "imd2020"
    raise DataError("unknown dataset layout: expected a manifest, Tp/+Gt/, IMD2020, CASIA, "
                    "NIST16, Columbia or COVERAGE; pass the format explicitly", path)


def open_dataset(path: str | Path, format: str = "auto", on_error: OnError = "raise",
                 ) -> ForgeryDataset:
    """Read any supported dataset; ``format`` is ``auto`` or one of ``READERS``."""
    path = Path(path)
    name = detect_format(path) if format == "auto" else format
    if name not in READERS:
        raise DataError(f"unknown dataset format {format!r}; choose auto or "
                        f"{', '.join(READERS)}")
    return READERS[name](path, on_error=on_error)


# -- dataset report (``cflnet data check``) -------------------------------------------------
COVERAGE_BINS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class DataReport:
    """Counts, pristine share, mask-coverage histogram and every problem of a dataset."""

    total: int = 0
    tampered: int = 0
    pristine: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    coverage_counts: list[int] = field(default_factory=lambda: [0] * (len(COVERAGE_BINS) - 1))
    problems: list[Problem] = field(default_factory=list)

    @property
    def pristine_share(self) -> float:
        return self.pristine / self.total if self.total else 0.0

    def lines(self) -> list[str]:
        out = [f"images: {self.total}  tampered: {self.tampered}  pristine: {self.pristine} "
               f"({100 * self.pristine_share:.1f}%)"]
        if self.kinds:
            out.append("kinds: " + ", ".join(f"{k}={v}" for k, v in sorted(self.kinds.items())))
        out.append("mask coverage (share of tampered pixels, tampered images):")
        peak = max(max(self.coverage_counts), 1)
        for (low, high), count in zip(itertools.pairwise(COVERAGE_BINS), self.coverage_counts,
                                      strict=True):
            bar = "#" * round(30 * count / peak)
            out.append(f"  {100 * low:5.1f}-{100 * high:5.1f}%  {count:6d}  {bar}")
        out.append(f"problems: {len(self.problems)}")
        out += [f"  {problem}" for problem in self.problems]
        return out


def check_dataset(dataset: ForgeryDataset) -> DataReport:
    """Decode every pair and collect the report; never stops at the first problem."""
    report = DataReport(problems=list(dataset.problems))
    for index, record in enumerate(dataset):
        try:
            _, mask = dataset.load(index)
        except CFLNetError as exc:
            report.problems.append(Problem(str(record.image), str(exc)))
            continue
        report.total += 1
        coverage = float(mask.mean())
        kind = record.kind or ("pristine" if coverage == 0 else "tampered")
        report.kinds[kind] = report.kinds.get(kind, 0) + 1
        if coverage == 0:
            report.pristine += 1
            continue
        report.tampered += 1
        bucket = int(np.searchsorted(COVERAGE_BINS, coverage, side="left")) - 1
        report.coverage_counts[min(max(bucket, 0), len(report.coverage_counts) - 1)] += 1
    return report
