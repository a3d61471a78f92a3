"""``cflnet import-official``: convert the authors' released ``.pth`` into our checkpoint."""

from __future__ import annotations

from pathlib import Path

import typer


def import_official(
    source: Path = typer.Argument(..., help="The authors' state_dict (imd_2020_best_model.pth)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the .safetensors."),
    size: int = typer.Option(224, "--size", help="Input size the checkpoint was trained at."),
) -> None:
    """Import the authors' checkpoint safely (weights_only) and record their preprocessing."""
    from cflnet_sdk.training.official import import_official_checkpoint

    model_path = import_official_checkpoint(source, output, size=size)
    typer.echo(f"wrote {model_path} (BGR, ImageNet mean/std, {size}x{size}, OpenCV resize)")
