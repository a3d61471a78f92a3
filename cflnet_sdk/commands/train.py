"""``cflnet train``: the paper's recipe by default; every value from a flag or a YAML file.

Flags left out are ``None`` here and do not override the file; torch loads inside the command.
Under ``torchrun`` the same command trains with DistributedDataParallel.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from cflnet_sdk.training.train_config import PRECISIONS

EXIT_INTERRUPTED = 130


def train(
    config_file: Path | None = typer.Option(None, "--config", help="YAML file of settings "
                                            "(keys as in a run's config.yaml); flags win."),
    data: str | None = typer.Option(None, "--data", help="Training data: a manifest or a "
                                    "dataset folder (any layout `cflnet data check` reads)."),
    val: str | None = typer.Option(None, "--val", help="Validation data; default: a seeded "
                                   "--val-fraction split of --data."),
    data_format: str | None = typer.Option(None, "--format", help="Dataset layout: auto, "
                                           "manifest, paired, imd2020, casia, nist16, ..."),
    val_fraction: float | None = typer.Option(None, "--val-fraction",
                                              help="Validation share when no --val (default 0.1)."),
    synthetic: bool | None = typer.Option(None, "--synthetic/--no-synthetic",
                                          help="Train on streamed synthetic forgeries."),
    steps_per_epoch: int | None = typer.Option(None, "--steps-per-epoch",
                                               help="Synthetic: steps per epoch (default 100)."),
    val_samples: int | None = typer.Option(None, "--val-samples", help="Synthetic: held-out "
                                           "validation samples (another seed) (default 64)."),
    synth_kinds: str | None = typer.Option(None, "--synth-kinds", help="Synthetic: comma-"
                                           "separated splice,copy-move,removal,enhance."),
    synth_save_jpeg: float | None = typer.Option(None, "--synth-save-jpeg", min=0.0, max=1.0,
                                                 help="Synthetic: share of samples saved as "
                                                 "JPEG at the end (default: 0.5 in tile mode, "
                                                 "0 in resize mode)."),
    synth_pristine: float | None = typer.Option(None, "--synth-pristine", min=0.0, max=0.99,
                                                help="Synthetic: share of samples left "
                                                "unedited, with every compression history "
                                                "(default 0.1)."),
    synth_jpeg_quality: str | None = typer.Option(None, "--synth-jpeg-quality",
                                                  help="Synthetic: JPEG qualities LOW-HIGH of "
                                                  "every compression (default 60-95)."),
    sources: list[Path] | None = typer.Option(None, "--sources", help="Synthetic: folder of "
                                              "photos to forge (repeat; default: packaged "
                                              "photos). One in ten is held out for validation."),
    exclude_photos: Path | None = typer.Option(None, "--exclude-photos", help="Synthetic: a "
                                               "list of photos (folder/file per line) never to "
                                               "use, e.g. docs/unedited-validation-photos.txt."),
    mode: str | None = typer.Option(None, "--mode", help="resize (the paper's: whole image to "
                                    "--size) or tile (native --size crops; the model then runs "
                                    "on tiles of the image's own pixels) (default resize)."),
    ela: str | None = typer.Option(None, "--ela", help="Error-level input channels at these "
                                   "JPEG qualities, e.g. 90 or 75,90 (ours, not the paper's; "
                                   "default none)."),
    no_srm: bool = typer.Option(False, "--no-srm", help="No SRM residuals: the second stream "
                                "sees only the --ela channels (ours), or is left out without "
                                "them (the paper's RGB-only ablation)."),
    no_contrastive: bool = typer.Option(False, "--no-contrastive",
                                        help="CE only (the paper's ablation)."),
    contrastive_weight: float | None = typer.Option(None, "--contrastive-weight",
                                                    help="Contrastive weight (default 1)."),
    image_weight: float | None = typer.Option(None, "--image-weight",
                                              help="Weight of a loss on the image score (BCE "
                                              "of its top-1% mean against tampered or not; "
                                              "ours, against false alarms on unedited photos; "
                                              "default 0, the paper's)."),
    pretrained_backbone: Path | None = typer.Option(None, "--pretrained-backbone",
                                                    help="Local ImageNet weights for the RGB "
                                                         "trunk (timm/torchvision names)."),
    init: str | None = typer.Option(None, "--init", help="Fine-tune: start from this "
                                    "checkpoint's weights (`default`: the shipped model); its "
                                    "architecture, --size and --mode are used."),
    backbone: str | None = typer.Option(None, "--backbone", help="timm trunk (default resnet50)."),
    aspp_channels: int | None = typer.Option(None, "--aspp-channels", help="ASPP width (512)."),
    embedding_dim: int | None = typer.Option(None, "--embedding-dim",
                                             help="Projection size (default 256)."),
    size: int | None = typer.Option(None, "--size", help="Input height and width (default 256)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Epochs (default 100)."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b",
                                          help="Images per step, per process (default 4; >= 2)."),
    lr: float | None = typer.Option(None, "--lr", help="Adam learning rate (default 1e-4)."),
    lr_step_epochs: int | None = typer.Option(None, "--lr-step-epochs",
                                              help="StepLR period in epochs (default 20)."),
    lr_gamma: float | None = typer.Option(None, "--lr-gamma", help="StepLR factor (default 0.8)."),
    ema_decay: float | None = typer.Option(None, "--ema-decay", help="Validate and save a moving "
                                           "average of the weights, e.g. 0.999 (default 0: off)."),
    patch_size: int | None = typer.Option(None, "--patch-size", help="Contrastive patch (4)."),
    temperature: float | None = typer.Option(None, "--temperature", help="Contrastive t (0.1)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of init, data order, split "
                                    "and synthetic data (default 1221)."),
    workers: int | None = typer.Option(None, "--workers", "-j", help="Loader workers (def. 2)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
    precision: str | None = typer.Option(None, "--precision",
                                         help=f"{' | '.join(PRECISIONS)} (default fp32)."),
    channels_last: bool | None = typer.Option(None, "--channels-last/--no-channels-last",
                                              help="NHWC memory format (faster with AMP)."),
    compile_model: bool | None = typer.Option(None, "--compile/--no-compile",
                                              help="torch.compile the model."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run directory "
                                    "[runs/cflnet-DATE-TIME]."),
    resume: Path | None = typer.Option(None, "--resume", help="Continue the run in this "
                                       "directory exactly where its last save left it."),
    save_every: int | None = typer.Option(None, "--save-every", help="Also save every N steps "
                                          "(0: only at epoch end) (default 500)."),
    keep_epochs: bool | None = typer.Option(None, "--keep-epochs/--no-keep-epochs",
                                            help="Keep every epoch's weights as "
                                            "epoch-NNN.safetensors, to choose one later."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop (and save) after N "
                                         "steps in this invocation (0: no limit)."),
    log_every: int | None = typer.Option(None, "--log-every", help="Steps per progress line."),
    progress: bool | None = typer.Option(None, "--progress/--no-progress",
                                         help="Progress bar on a terminal."),
) -> None:
    """Train CFL-Net (defaults: the paper's recipe) and write a run directory."""
    from cflnet_sdk.default_model import named_checkpoint
    from cflnet_sdk.training import train_config
    from cflnet_sdk.training.data.sources import listed_photos

    flags = {
        "data": data, "val": val, "data_format": data_format, "val_fraction": val_fraction,
        "synthetic": synthetic, "steps_per_epoch": steps_per_epoch, "val_samples": val_samples,
        "synth_kinds": _kinds(synth_kinds), "synth_save_jpeg": synth_save_jpeg,
        "synth_pristine": synth_pristine, "synth_jpeg_quality": _range(synth_jpeg_quality),
        "sources": tuple(str(p) for p in sources) if sources else None, "mode": mode,
        "exclude_photos": None if exclude_photos is None else listed_photos(exclude_photos),
        "ela_qualities": _qualities(ela), "srm": False if no_srm else None,
        "contrastive_weight": 0.0 if no_contrastive else contrastive_weight,
        "image_weight": image_weight,
        "pretrained_backbone": None if pretrained_backbone is None else str(pretrained_backbone),
        "init": None if init is None else named_checkpoint(init),  # "default": shipped
        "backbone": backbone, "aspp_channels": aspp_channels, "embedding_dim": embedding_dim,
        "size": size, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "lr_step_epochs": lr_step_epochs, "lr_gamma": lr_gamma, "ema_decay": ema_decay,
        "patch_size": patch_size,
        "temperature": temperature, "seed": seed, "workers": workers, "device": device,
        "precision": precision, "channels_last": channels_last, "compile": compile_model,
        "out": None if out is None else str(out), "save_every": save_every,
        "keep_epochs": keep_epochs, "max_steps": max_steps, "log_every": log_every,
        "progress": progress,
    }
    if resume is not None:
        if config_file is not None:
            flags = {**train_config.read_yaml(config_file), **{k: v for k, v in flags.items()
                                                               if v is not None}}
        config = train_config.resume_config(resume, flags)
    else:
        config = train_config.resolve(config_file, flags)
    config.check_data()

    from cflnet_sdk.training.train import train as run_training

    result = run_training(config, resume=resume is not None,
                          log=lambda line: typer.echo(line))
    if result.status == "interrupted":
        sys.exit(EXIT_INTERRUPTED)


def _kinds(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _range(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    low, _, high = text.partition("-")
    try:
        return int(low), int(high)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not LOW-HIGH, e.g. 50-100",
                                 param_hint="--synth-jpeg-quality") from None


def _qualities(text: str | None) -> tuple[int, ...] | None:
    parts = _kinds(text)
    if parts is None:
        return None
    try:
        return tuple(int(part) for part in parts)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of JPEG qualities",
                                 param_hint="--ela") from None
