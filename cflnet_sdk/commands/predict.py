"""``cflnet predict``: localise tampering in files, folders and globs; write masks and overlays.

A file that cannot be read is reported by name and skipped; the others are still written, and
the exit status is 1 if any file failed. Every output is written atomically.
"""

from __future__ import annotations

import glob
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import typer

from cflnet_sdk.errors import CFLNetError, ConfigError
from cflnet_sdk.images import IMAGE_SUFFIXES

LOSSLESS_SUFFIXES = {".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}
OUTPUT_KINDS = ("mask", "overlay", "prob", "json")
SUMMARY_NAME = "predictions.jsonl"


def expand_inputs(paths: list[str]) -> tuple[list[Path], list[str]]:
    """Files as given, image files inside folders (recursively), and glob matches, in order.

    Returns ``(files, problems)``: a pattern or path that matches nothing is a problem.
    """
    files: list[Path] = []
    problems: list[str] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            problems += [] if found else [f"{entry}: no image files in this folder"]
            files += found
        elif path.exists():
            files.append(path)
        elif glob.has_magic(entry):
            found = sorted(Path(p) for p in glob.glob(entry, recursive=True) if Path(p).is_file())
            problems += [] if found else [f"{entry}: the pattern matches no files"]
            files += found
        else:
            problems.append(f"{entry}: no such file or folder")
    unique = list(dict.fromkeys(p.resolve() for p in files))
    return unique, problems


def output_stems(files: list[Path]) -> list[str]:
    """A distinct output name per input: the file stem, suffixed -2, -3 ... on clashes."""
    seen: dict[str, int] = {}
    stems = []
    for path in files:
        count = seen.get(path.stem.lower(), 0) + 1
        seen[path.stem.lower()] = count
        stems.append(path.stem if count == 1 else f"{path.stem}-{count}")
    return stems


def parse_save(value: str) -> set[str]:
    kinds = {part.strip() for part in value.split(",") if part.strip()}
    unknown = kinds - set(OUTPUT_KINDS)
    if unknown or not kinds:
        raise ConfigError(f"--save {value!r}: choose from {', '.join(OUTPUT_KINDS)} "
                          "(comma-separated)")
    return kinds


def write_outputs(prediction, source: Path, stem: str, out: Path, kinds: set[str]
                  ) -> dict[str, str]:
    """Write the requested image outputs atomically; returns kind -> file name."""
    from PIL import Image

    from cflnet_sdk.fileio import atomic_path

    written: dict[str, str] = {}

    def save(kind: str, name: str, image: Image.Image, **options) -> None:
        target = out / name
        with atomic_path(target) as tmp:
            image.save(tmp, format=options.pop("format"), **options)
        written[kind] = name

    if "mask" in kinds:
        save("mask", f"{stem}.mask.png", Image.fromarray(prediction.mask.astype(np.uint8) * 255),
             format="PNG")
    if "overlay" in kinds:
        overlay = prediction.overlay(contour=True)
        if source.suffix.lower() in LOSSLESS_SUFFIXES:
            save("overlay", f"{stem}.overlay.png", overlay, format="PNG")
        else:
            save("overlay", f"{stem}.overlay.jpg", overlay, format="JPEG", quality=92)
    if "prob" in kinds:
        levels = np.rint(prediction.probability * 65535.0).astype(np.uint16)
        save("prob", f"{stem}.prob.png", Image.fromarray(levels), format="PNG")
    return written


@contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator:
    """A rich progress bar on a terminal; a no-op when piped or disabled."""
    try:
        from rich.progress import Progress
    except ImportError:  # typer-slim installs without rich: no bar, same outputs
        enabled = False
    if not enabled or not sys.stderr.isatty():
        yield lambda: None
        return

    with Progress(transient=True) as progress:
        task = progress.add_task("predicting", total=total)
        yield lambda: progress.advance(task)


def predict(
    paths: list[str] = typer.Argument(..., help="Image files, folders (searched recursively) "
                                                "or glob patterns, e.g. 'shots/**/*.jpg'."),
    model: Path | None = typer.Option(None, "--model", "-m",
                                      help="Model file: .safetensors, .onnx or .engine "
                                           "(default: the shipped model)."),
    out: Path = typer.Option(Path("predictions"), "--out", "-o", help="Output folder."),
    backend: str = typer.Option("auto", "--backend",
                                help="auto (from the suffix), torch, onnxruntime or tensorrt."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    mode: str | None = typer.Option(None, "--mode", help="resize (whole image at the model "
                                    "size: fast) or tile (the image's own pixels in model-size "
                                    "tiles: keeps fine traces); default: the model's."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Images per model call."),
    threshold: float | None = typer.Option(None, "--threshold", min=0.0, max=1.0,
                                           help="Mask threshold (default: the model's)."),
    decision_threshold: float | None = typer.Option(
        None, "--decision-threshold", min=0.0, max=1.0,
        help="Image-level verdict: tampered when the score reaches it (default: the model's "
             "operating point)."),
    save: str = typer.Option("mask,overlay,json", "--save",
                             help="Outputs: any of mask,overlay,prob,json."),
    progress: bool = typer.Option(True, "--progress/--no-progress",
                                  help="Progress bar (only on a terminal)."),
) -> None:
    """Localise tampering in images; write masks, overlays, probability maps and a summary.

    Masks are PNG, overlays JPEG (PNG for lossless inputs), probability maps 16-bit PNG, the
    summary predictions.jsonl. A bad input is reported and skipped; the exit status is then 1.
    """
    from cflnet_sdk.fileio import atomic_path
    from cflnet_sdk.localizer import Localizer

    kinds = parse_save(save)
    files, problems = expand_inputs(paths)
    for problem in problems:
        typer.secho(f"error: {problem}", fg=typer.colors.RED, err=True)
    localizer = Localizer(model, backend=backend, device=device, threshold=threshold,
                          decision_threshold=decision_threshold, mode=mode)  # type: ignore[arg-type]
    typer.echo(f"{localizer.backend_name} on {localizer.device} "
               f"({', '.join(localizer.providers)}), {localizer.mode} mode: {len(files)} "
               f"image(s) -> {out}", err=True)
    out.mkdir(parents=True, exist_ok=True)
    records, failures = [], len(problems)
    stems = output_stems(files)
    results = localizer.predict_iter([str(f) for f in files], batch_size, errors="return")
    with progress_bar(len(files), progress) as advance:
        for source, stem, result in zip(files, stems, results, strict=True):
            record: dict = {"path": str(source)}
            try:
                if isinstance(result, CFLNetError):
                    raise result
                record |= result.to_dict() | {"outputs": write_outputs(result, source, stem,
                                                                       out, kinds)}
                del record["source"]
            except (CFLNetError, OSError) as exc:
                failures += 1
                record["error"] = str(exc)
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            records.append(record)
            advance()
    if "json" in kinds:
        with atomic_path(out / SUMMARY_NAME) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    done = len(files) - sum("error" in r for r in records)
    typer.echo(f"{done} of {len(files)} image(s) done, {failures} failed; outputs in {out}",
               err=True)
    if failures:
        raise typer.Exit(1)
