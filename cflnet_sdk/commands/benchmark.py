"""``cflnet benchmark``: latency, throughput, end-to-end time and memory of each model file.

Every file given is a row of its own (file name and precision), whatever its backend. In tile
mode: end-to-end milliseconds per megapixel and peak memory on photos of given sizes. With
``--profile PHOTO``: where the time of one ``predict`` of that photo goes, stage by stage.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import typer

from cflnet_sdk.errors import ConfigError


def parse_list(value: str, what: str) -> list[str]:
    items = [part.strip() for part in value.split(",") if part.strip()]
    if not items:
        raise ConfigError(f"{what} {value!r} is empty; give a comma-separated list")
    return items


def benchmark(
    model: list[Path] = typer.Option([], "--model", "-m",
                                     help="Model file(s); repeat for several: each is timed as "
                                          "its own row, e.g. fp32 and int8 ONNX side by side "
                                          "(default: the shipped model)."),
    backend: str = typer.Option("auto", "--backend",
                                help="Comma-separated: torch,onnxruntime,tensorrt; each file "
                                     "runs on every listed backend that opens it (a checkpoint "
                                     "also on onnxruntime, exported, if no .onnx is given); "
                                     "auto = the backend of each file's suffix."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    mode: str = typer.Option("resize", "--mode", help="resize: model latency per batch and "
                             "end-to-end on a 1024x768 JPEG; tile: end-to-end ms per megapixel "
                             "on photos of --megapixels."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Resize mode: comma-separated "
                                    "batch sizes."),
    size: int = typer.Option(256, "--size", min=32, help="Resize mode: input height and width "
                             "(pixels). Tile mode uses the model's tile size."),
    megapixels: str = typer.Option("1,4,12", "--megapixels", help="Tile mode: comma-separated "
                                   "photo sizes in megapixels (4:3)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write results as JSON."),
    warmup: int | None = typer.Option(None, "--warmup", min=0, help="Untimed calls per backend "
                                      "first (default 3; 1 in tile mode)."),
    iterations: int | None = typer.Option(None, "--iterations", min=1, help="Timed calls per "
                                          "backend (default 20; 3 in tile mode)."),
    profile: Path | None = typer.Option(
        None, "--profile", exists=True, dir_okay=False,
        help="Time each stage of predict on this photo (decode, input channels, tiles, "
             "network, blend, map and score, copy-move, fusion) as Localizer(MODEL) runs it "
             "by default; --mode, --batch-sizes and --megapixels do not apply."),
) -> None:
    """Time model files side by side in one process (interleaved, so load affects all alike).

    A file that cannot be run on its backend is an error naming it: nothing is left out.
    """
    from cflnet_sdk.default_model import require_default_model
    from cflnet_sdk.runtime.benchmark import (
        HEADER,
        TILE_HEADER,
        run_benchmark,
        run_tile_benchmark,
    )

    models = list(model) or [require_default_model()]
    if profile is not None:
        results = profile_models(models, backend, device, profile, warmup, iterations)
        _write_json(json_out, results)
        return
    names = None if backend == "auto" else parse_list(backend, "--backend")
    if mode not in ("resize", "tile"):
        raise ConfigError(f"--mode {mode!r} is not 'resize' or 'tile'")
    tile = mode == "tile"
    option, text = ("--megapixels", megapixels) if tile else ("--batch-sizes", batch_sizes)
    try:
        sizes = [(float if tile else int)(b) for b in parse_list(text, option)]
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r}: numbers expected") from exc
    warmup = (1 if tile else 3) if warmup is None else warmup
    iterations = (3 if tile else 20) if iterations is None else iterations
    typer.echo(TILE_HEADER if tile else HEADER)
    run = run_tile_benchmark if tile else partial(run_benchmark, size=size)
    results = run(models, names, device, tuple(sizes), warmup=warmup,
                  iterations=iterations, log=lambda line: typer.echo(line))
    for r in results:
        if getattr(r, "stages", None):
            parts = ", ".join(f"{k} {v:.1f} ms" for k, v in r.stages.items())
            typer.echo(f"{Path(r.model).name} on {r.backend}: end-to-end stages ({r.size}x"
                       f"{r.size} model, 1024x768 JPEG): {parts}")
    _write_json(json_out, results)


def profile_models(models: list[Path], backend: str, device: str, photo: Path,
                   warmup: int | None, iterations: int | None) -> list:
    """Print the stage-by-stage profile of ``photo`` under each model, as Localizer runs it."""
    from cflnet_sdk import Localizer
    from cflnet_sdk.runtime.onnxruntime_backend import openvino_hint
    from cflnet_sdk.runtime.profile import profile_photo

    results = []
    for path in models:
        with Localizer(path, backend=backend, device=device) as localizer:
            typer.echo(f"{path.name} ({localizer.precision}) on {localizer.backend_name}, "
                       f"{localizer.device}, {localizer.mode} mode, copy-move "
                       f"{'on' if localizer.fusion else 'off'}")
            if hint := openvino_hint(localizer.providers):
                typer.echo(hint)
            result = profile_photo(localizer, photo, 1 if warmup is None else warmup,
                                   3 if iterations is None else iterations)
        typer.echo(result.format())
        results.append(result)
    return results


def _write_json(path: Path | None, results: list) -> None:
    from cflnet_sdk.fileio import write_bytes_atomic

    if path is not None:
        payload = json.dumps([r.as_dict() for r in results], indent=2) + "\n"
        write_bytes_atomic(path, payload.encode("utf-8"))
        typer.echo(f"wrote {path}")
