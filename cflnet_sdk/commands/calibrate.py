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
    copy_move_false_alarms: float | None = typer.Option(
        None, "--copy-move-false-alarms", min=0.0, max=0.99, help="Raise the copy-move "
        "operating point from the module's (0.55, chosen on training photos) until copy-move "
        "evidence alone calls at most this share of each group tampered (at most "
        "--false-alarms)."),
    backend: str = typer.Option("auto", "--backend", help="auto, torch, onnxruntime."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
) -> None:
    """Write MODEL with the lowest decision threshold that calls at most --false-alarms of each
    set of unedited photos tampered, as they are and after each --resave-jpeg (every group
    held to the rate, so no kind of photo hides behind another). The threshold and the rate
    travel in the file's contract, so every backend and `cflnet serve` decide alike. With
    copy-move evidence (the default), a photo it calls copied counts as a false alarm whatever
    the threshold, and the network's threshold is chosen for the rest of the allowance;
    --copy-move-false-alarms chooses the copy-move operating point on the same photos first."""
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.runtime.copymove import SCORE_THRESHOLD
    from cflnet_sdk.training.calibrate import (
        unedited_scores,
        verdict_scores,
        with_decision,
        worst_group_point,
    )
    from cflnet_sdk.training.data.readers import open_dataset
    from cflnet_sdk.training.evaluate import data_label, resaved_as_jpeg

    if copy_move_false_alarms is not None and (not copy_move or
                                               copy_move_false_alarms > false_alarms):
        raise ConfigError("--copy-move-false-alarms needs copy-move evidence and at most "
                          "--false-alarms: the verdict's false alarms include its own")
    network: dict[str, list[float]] = {}
    copied: dict[str, list[float]] = {}
    for path in unedited:
        dataset = open_dataset(path, on_error="skip")
        for problem in dataset.problems:
            typer.secho(f"skipped: {problem}", fg=typer.colors.YELLOW, err=True)
        photos = [record.image for record in dataset if record.mask is None]
        for quality in [None, *(resave_jpeg or [])]:
            sources = (photo if quality is None else resaved_as_jpeg(photo, quality)
                       for photo in photos)
            name = data_label(path, quality)
            network[name], copied[name], problems = unedited_scores(
                model, sources, copy_move=copy_move, backend=backend, device=device)
            for problem in problems:
                typer.secho(f"skipped: {problem}", fg=typer.colors.YELLOW, err=True)
    copy_move_threshold = None
    if copy_move:
        # raised from the module's point, never lowered: photos without a pair say nothing
        # about how low it could safely go
        copy_move_threshold = SCORE_THRESHOLD if copy_move_false_alarms is None else \
            max(SCORE_THRESHOLD, worst_group_point(copied, copy_move_false_alarms)[0])
    groups = {name: verdict_scores(scores, copied[name], copy_move_threshold)
              for name, scores in network.items()}
    threshold, hardest = worst_group_point(groups, false_alarms)
    contract = with_decision(model, threshold, false_alarms, output, copy_move_threshold)
    typer.echo(f"wrote {output}: decision threshold {contract.decision_threshold:.4f} "
               f"({false_alarms:.1%} of false alarms allowed in each group; set by {hardest})")
    if copy_move_threshold is not None:
        typer.echo(f"  copy-move operating point {copy_move_threshold:.4f}")
    for name, scores in groups.items():
        flagged = sum(score >= threshold for score in scores)
        typer.echo(f"  {name}: {flagged} of {len(scores)} unedited photo(s) called tampered")
