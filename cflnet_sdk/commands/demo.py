"""``cflnet demo``: the whole job on generated forgeries, in under a minute on a CPU."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("cflnet-demo"), "--out", help="Folder for the results."),
    count: int = typer.Option(6, "--count", min=1, max=64, help="How many forgeries."),
    seed: int = typer.Option(2026, "--seed", help="Seed of the generated forgeries."),
    model: Path | None = typer.Option(None, "--model", help="Model file (default: shipped)."),
) -> None:
    """Generate forgeries, localise them, and write a contact sheet and metrics."""
    from cflnet_sdk.demo import run_demo

    result = run_demo(out, count=count, seed=seed, model=model)
    auc = result.metrics["pixel_auc"]
    typer.echo(f"model: {result.model}" + ("" if result.trained else "  (UNTRAINED: pipeline "
                                            "demo only, no trained default model ships yet)"))
    typer.echo(f"images: {result.metrics['images']}  per-image pixel AUC: "
               f"{'n/a' if auc is None else f'{auc:.3f}'}  pixel F1@0.5: "
               f"{result.metrics['pixel_f1'] or 0:.3f}")
    typer.echo(f"contact sheet: {result.sheet}")
