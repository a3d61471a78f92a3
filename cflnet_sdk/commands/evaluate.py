"""``cflnet evaluate``: score model files on datasets; several of each give a cross matrix."""

from __future__ import annotations

from pathlib import Path

import typer


def evaluate(
    model: list[Path] | None = typer.Option(None, "--model", "-m", help="Model file "
                                            "(.safetensors, .onnx, .engine); repeat for several "
                                            "(default: the shipped model)."),
    data: list[str] = typer.Option(..., "--data", "-d", help="Dataset (manifest or folder of "
                                   "any layout `cflnet data check` reads); repeat for several."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all metrics as JSON."),
    backend: str = typer.Option("auto", "--backend", help="auto (from the suffix), torch, "
                                "onnxruntime or tensorrt."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    mode: str | None = typer.Option(None, "--mode", help="resize or tile (the image's own "
                                    "pixels in model-size tiles); default: each model's."),
    data_format: str = typer.Option("auto", "--format", help="Dataset layout (auto, manifest, "
                                    "paired, imd2020, casia, nist16, columbia, coverage)."),
    batch_size: int = typer.Option(8, "--batch-size", "-b", min=1, help="Images per call."),
    plots: Path | None = typer.Option(None, "--plots", help="Folder for roc.png and the worst "
                                      "and best examples (needs matplotlib)."),
    examples: int = typer.Option(3, "--examples", min=0, help="Worst and best images to "
                                 "draw per model and dataset with --plots."),
    baselines_only: bool = typer.Option(False, "--baselines-only", help="Score only the "
                                        "training-free baselines (centre prior, ELA); no model."),
    resave_jpeg: list[int] | None = typer.Option(None, "--resave-jpeg", min=1, max=100,
                                                 help="Also score every dataset re-saved as "
                                                 "JPEG at this quality, as sharing a photo "
                                                 "does; repeat for several."),
) -> None:
    """Evaluate through Localizer (the runtime's preprocessing) with the paper's metrics.

    The headline is the honest per-image pixel AUC; the paper's flip-invariant variant, pooled
    AUC, F1/IoU at 0.5 and at the best threshold, image AUC and skipped counts follow. Every
    dataset is also scored by two training-free maps (centre prior, ELA), rows of their own,
    and each model is shown against them: their AUC and the share of images it beats them on.
    A verdict that fuses several evidences (network, copy-move) gets a row per evidence too.
    With --resave-jpeg each dataset is scored again after that re-save, rows of its own.
    """
    from rich.console import Console

    from cflnet_sdk.default_model import require_default_model
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.training.evaluate import (
        data_label,
        evaluate_baselines,
        render_tables,
        write_json,
        write_plots,
    )
    from cflnet_sdk.training.evaluate import evaluate as run

    if baselines_only and model:
        raise ConfigError("--baselines-only scores no model: drop --model, or drop "
                          "--baselines-only (models are always shown beside the baselines)")
    console = Console()
    models = [] if baselines_only else model or [require_default_model()]
    sets = [(path, quality) for path in data for quality in [None, *(resave_jpeg or [])]]
    baselines = {}
    for data_path, quality in sets:  # once per dataset, whatever the number of models
        found = baselines[data_path, quality] = evaluate_baselines(
            data_path, data_format=data_format, jpeg_quality=quality)
        console.print(f"baselines on {data_label(data_path, quality)}: "
                      f"{found.evaluations[0].metrics['images']} images, "
                      f"{sum(e.seconds for e in found.evaluations):.1f} s")
    evaluations = []
    for model_path in models:
        for data_path, quality in sets:
            result = run(model_path, data_path, backend=backend, device=device,
                         data_format=data_format, batch_size=batch_size,
                         examples=examples if plots else 0,
                         baselines=baselines[data_path, quality], mode=mode,
                         jpeg_quality=quality)
            console.print(f"{model_path.name} on {result.data}: {result.metrics['images']} "
                          f"images, {result.backend} on {result.device}, "
                          f"{result.seconds:.1f} s")
            evaluations += [result, *result.evidence]
    evaluations += [e for found in baselines.values() for e in found.evaluations]
    for table in render_tables(evaluations):
        console.print(table)
    if json_out is not None:
        write_json(evaluations, json_out)
        console.print(f"wrote {json_out}")
    if plots is not None:
        written = write_plots(evaluations, plots)
        console.print(f"wrote {len(written)} plot(s) to {plots}")
