"""``cflnet average``: one checkpoint from the weighted average of several."""

from __future__ import annotations

from pathlib import Path

import typer


def average(
    checkpoints: list[str] = typer.Argument(..., help="Checkpoints (.safetensors) of one "
                                            "architecture: a run's epochs, or a fine-tune and "
                                            "the model it started from ('default': the shipped "
                                            "model)."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the average."),
    weights: str | None = typer.Option(None, "--weights", help="Comma-separated weight per "
                                       "checkpoint (normalised to sum 1); default equal."),
    half: bool = typer.Option(False, "--half", help="Store float16 weights (half the file)."),
) -> None:
    """Average checkpoints' weights (WiSE-FT: a fine-tune with its start keeps more of both)."""
    from cflnet_sdk.default_model import named_checkpoint
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.training.checkpoint import average_checkpoints, save_checkpoint

    try:
        shares = None if weights is None else [float(w) for w in weights.split(",")]
    except ValueError as exc:
        raise ConfigError(f"--weights {weights!r} is not comma-separated numbers, e.g. "
                          "0.5,0.5") from exc
    model = average_checkpoints([named_checkpoint(c) for c in checkpoints], shares)
    save_checkpoint(model, output, half=half)
    typer.echo(f"wrote {output}: the average of {len(checkpoints)} checkpoints "
               f"(weights {weights or 'equal'})")
