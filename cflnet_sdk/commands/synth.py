"""``cflnet synth``: write synthetic forgeries (images, masks, manifest.jsonl) to a folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from cflnet_sdk.training.data.synth import SynthConfig


def synth(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write images/, masks/ and "
                             "manifest.jsonl into."),
    count: int = typer.Option(100, "--count", "-n", help="Number of samples."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives the same bytes."),
    sources: list[Path] = typer.Option(None, "--sources", help="Folders of your photos "
                                       "(repeatable); default: photos shipped in scikit-image, "
                                       "scikit-learn and matplotlib."),
    kinds: str = typer.Option("splice,copy-move,removal,enhance", "--kinds",
                              help="Comma-separated manipulations to draw from."),
    pristine_rate: float = typer.Option(0.1, "--pristine-rate", help="Share of unedited "
                                        "images (mask null)."),
    post_rate: float | None = typer.Option(None, "--post-rate", help="Share of samples that "
                                           "get global trace-hiding post-processing (default "
                                           "0.5; 0.3 with --native)."),
    native: bool = typer.Option(False, "--native", help="Native crops of the photos' own "
                                "pixels with JPEG histories before and after the edit: the "
                                "data a tile-mode model trains on."),
    split: str = typer.Option("all", "--split", help="Photos to use: all, train or held-out "
                              "(one in ten by file name: what `cflnet train` validates on)."),
    post: str = typer.Option("jpeg,resize,blur,noise", "--post",
                             help="Comma-separated global post-processing to draw from."),
    jpeg_quality: str = typer.Option("60-95", "--jpeg-quality", help="JPEG post-processing "
                                     "quality range LOW-HIGH."),
    size: str = typer.Option("256", "--size", help="Output size: N or HxW."),
    image_format: str = typer.Option("png", "--format", help="Image files: png or jpeg "
                                     "(masks are always PNG)."),
    workers: int = typer.Option(1, "--workers", "-j", help="Worker processes."),
    preview: bool = typer.Option(False, "--preview", help="Also write preview.png, a contact "
                                 "sheet with mask outlines."),
    config_file: Path | None = typer.Option(None, "--config", help="A set's synth_config.json: "
                                            "regenerate that set's samples, byte for byte, "
                                            "whatever today's defaults; only --out, --count, "
                                            "--workers, --preview and --sources apply."),
) -> None:
    """Generate synthetic forgeries (splice, copy-move, removal, enhance) with exact masks."""
    from cflnet_sdk.errors import DataError
    from cflnet_sdk.training.data.synth import (
        NATIVE_RECIPE,
        SynthConfig,
        parse_list,
        parse_size,
    )

    if config_file is not None:
        config = _saved_config(config_file, sources)
        _write(config, out, count, workers, preview)
        return
    height, width = parse_size(size)
    try:
        low, high = (int(v) for v in jpeg_quality.split("-"))
    except ValueError as exc:
        raise DataError(f"--jpeg-quality {jpeg_quality!r} is not LOW-HIGH, e.g. 60-95") from exc
    chosen = {"post_rate": post_rate} if post_rate is not None else {}
    config = SynthConfig(seed=seed, height=height, width=width, kinds=parse_list(kinds),
                         pristine_rate=pristine_rate, post_ops=parse_list(post),
                         jpeg_quality=(low, high), sources=tuple(str(s) for s in sources or ()),
                         image_format=image_format, split=split,  # type: ignore[arg-type]
                         **{**(NATIVE_RECIPE if native else {}), **chosen})
    _write(config, out, count, workers, preview)


def _saved_config(path: Path, sources: list[Path] | None) -> SynthConfig:
    """The settings saved beside a set's manifest, its photo folders replaced when given."""
    from dataclasses import replace

    from cflnet_sdk.errors import DataError
    from cflnet_sdk.training.data.synth import SynthConfig

    try:
        config = SynthConfig.from_json(path.read_text())
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"--config {path}: not a readable synth_config.json ({exc}); give the "
                        "file `cflnet synth` wrote beside a set's manifest") from exc
    return replace(config, sources=tuple(str(s) for s in sources)) if sources else config


def _write(config: SynthConfig, out: Path, count: int, workers: int, preview: bool) -> None:
    from cflnet_sdk.training.data.synth import generate

    report = generate(config, out, count, workers=workers, preview=preview)
    kinds_text = ", ".join(f"{k}={v}" for k, v in sorted(report.kinds.items()))
    typer.echo(f"wrote {report.count} samples to {report.out} in {report.seconds:.1f} s "
               f"({report.rate:.1f} samples/s, {workers} worker(s)): {kinds_text}")
    typer.echo(f"manifest: {report.manifest}")
    if report.preview:
        typer.echo(f"preview: {report.preview}")
