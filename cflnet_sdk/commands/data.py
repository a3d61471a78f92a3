"""``cflnet data``: inspect forgery datasets before training on them."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Inspect forgery datasets (manifest, Tp/Gt, IMD2020, CASIA, NIST16, "
                  "Columbia, COVERAGE).", no_args_is_help=True)


@app.command("check")
def check(
    path: Path = typer.Argument(..., help="A manifest file, or a dataset folder."),
    format: str = typer.Option("auto", "--format", help="auto, manifest, paired, imd2020, "
                               "casia, nist16, columbia or coverage."),
) -> None:
    """Print counts, pristine share, mask coverage and every problem (exit 1 if any)."""
    from cflnet_sdk.training.data.readers import check_dataset, open_dataset

    dataset = open_dataset(path, format=format, on_error="skip")
    report = check_dataset(dataset)
    for line in report.lines():
        typer.echo(line)
    if report.problems:
        raise typer.Exit(1)
