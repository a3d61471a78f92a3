"""``cflnet variants``: build a checkpoint's precision variants and measure each, in one table."""

from __future__ import annotations

import shlex
from pathlib import Path

import typer

from cflnet_sdk.export.precision import INT8_METHOD_HELP, KEEP_FLOAT_HELP

DEFAULT_COUNT = 64


def variants(
    checkpoint: Path = typer.Argument(..., help="Checkpoint (.safetensors) to export."),
    data: str = typer.Option(..., "--data", "-d", help="Labelled images to evaluate on "
                             "(any layout `cflnet evaluate` reads)."),
    calib: Path = typer.Option(..., "--calib", help="Folder of real photos for INT8 "
                               "calibration, none of them in --data (masks and other files "
                               "are skipped and listed)."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the ONNX files, "
                                "variants.md and variants.json."),
    calib_count: int = typer.Option(DEFAULT_COUNT, "--calib-count", min=1,
                                    help="Calibration photos."),
    int8_method: str | None = typer.Option(None, "--int8-method", help=INT8_METHOD_HELP),
    keep_float: str | None = typer.Option(None, "--int8-keep-float", help=KEEP_FLOAT_HELP),
    data_format: str = typer.Option("auto", "--format", help="Dataset layout of --data."),
    device: str = typer.Option("cpu", "--device", help="Where every file runs."),
    megapixels: float = typer.Option(1.0, "--megapixels", min=0.01, help="Tile-mode models: "
                                     "photo size timed, in megapixels."),
    iterations: int = typer.Option(10, "--iterations", min=1, help="Timed calls per file."),
) -> None:
    """Export fp32, fp16, INT8 (CPU layout) and INT8 (TensorRT layout) ONNX files, evaluate
    each on --data, time each beside torch eager, and write one table.

    Columns: file, size, ms per image (per megapixel for a tile-mode model), speed-up over
    torch eager, honest per-image AUC, its change against fp32, mask IoU against fp32. The
    table names the fastest variant within 0.005 AUC of fp32.
    """
    from cflnet_sdk.export.precision import Int8Recipe
    from cflnet_sdk.export.variants import build_variants, check_disjoint, measure_variants
    from cflnet_sdk.export.variants_report import VariantsReport

    recipe = Int8Recipe.parse(int8_method, keep_float)
    command = ["cflnet", "variants", str(checkpoint), "--data", data, "--calib", str(calib),
               "-o", str(output), "--calib-count", str(calib_count), "--int8-method",
               recipe.method, "--iterations", str(iterations)]
    if recipe.keep_float is not None:
        command += ["--int8-keep-float", ",".join(recipe.keep_float)]
    log = typer.echo
    built = build_variants(checkpoint, output, calib, calib_count, recipe, log)
    check_disjoint(built.calibration.photos, data, data_format)
    rows, prior = measure_variants(checkpoint, built, data, data_format=data_format,
                                   device=device, megapixels=megapixels,
                                   warmup=min(2, iterations), iterations=iterations, log=log)
    report = VariantsReport(shlex.join(command), data, built.calibration, rows, prior, recipe,
                            tile=built.tile, megapixels=megapixels)
    markdown, document = report.write(output)
    typer.echo(report.markdown())
    typer.echo(f"wrote {markdown} and {document}")
