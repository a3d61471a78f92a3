"""``cflnet calibrate``: choose a model's image-level operating point on unedited photos."""

from __future__ import annotations

from pathlib import Path

import typer


def calibrate(
    model: Path = typer.Argument(..., help="Model file to calibrate (.safetensors or .onnx)."),
    unedited: list[str] = typer.Option(..., "--unedited", "-u", help="Photos nobody edited (a "
                                       "manifest or dataset folder; images with a tampered "
                                       "mask are left out); repeat for several."),
    false_alarms: float = typer.Option(0.05, "--false-alarms", min=0.0, max=0.99,
                                       help="Share of unedited photos the verdict may call "
                                       "tampered."),
    resave_jpeg: list[int] | None = typer.Option(None, "--resave-jpeg", min=1, max=100,
                                                 help="Also hold the verdict to the photos "
                                                 "re-saved as JPEG at this quality; repeat."),
    output: Path = typer.Option(..., "-o", "--output", help="Where to write the calibrated "
                                "model (the same format; weights unchanged)."),
    copy_move: bool = typer.Option(True, "--copy-move/--no-copy-move", help="Fuse copy-move "
                                   "evidence into the verdict (at its own operating point)."),
    backend: str = typer.Option("auto", "--backend", help="auto, torch, onnxruntime."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Write MODEL with the lowest decision threshold that calls at most --false-alarms of each
    set of unedited photos tampered, as they are and after each --resave-jpeg (every group
    held to the rate, so no kind of photo hides behind another). The threshold and the rate
    travel in the file's contract, so every backend and `cflnet serve` decide alike. With
    copy-move evidence (the default), a photo it calls copied counts as a false alarm whatever
    the threshold, and the network's threshold is chosen for the rest of the allowance."""
    from cflnet_sdk.training.calibrate import unedited_scores, with_decision, worst_group_point
    from cflnet_sdk.training.data.readers import open_dataset
    from cflnet_sdk.training.evaluate import data_label, resaved_as_jpeg

    copy_move_threshold = None
    if copy_move:
        from cflnet_sdk.runtime.copymove import SCORE_THRESHOLD as copy_move_threshold
    groups: dict[str, list[float]] = {}
    for path in unedited:
        dataset = open_dataset(path, on_error="skip")
        for problem in dataset.problems:
            typer.secho(f"skipped: {problem}", fg=typer.colors.YELLOW, err=True)
        photos = [record.image for record in dataset if record.mask is None]
        for quality in [None, *(resave_jpeg or [])]:
            sources = (photo if quality is None else resaved_as_jpeg(photo, quality)
                       for photo in photos)
            scores, problems = unedited_scores(model, sources,
                                               copy_move_threshold=copy_move_threshold,
                                               backend=backend, device=device)
            for problem in problems:
                typer.secho(f"skipped: {problem}", fg=typer.colors.YELLOW, err=True)
            groups[data_label(path, quality)] = scores
    threshold, hardest = worst_group_point(groups, false_alarms)
    contract = with_decision(model, threshold, false_alarms, output, copy_move_threshold)
    typer.echo(f"wrote {output}: decision threshold {contract.decision_threshold:.4f} "
               f"({false_alarms:.1%} of false alarms allowed in each group; set by {hardest})")
    for name, scores in groups.items():
        flagged = sum(score >= threshold for score in scores)
        typer.echo(f"  {name}: {flagged} of {len(scores)} unedited photo(s) called tampered")
