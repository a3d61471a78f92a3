"""``cflnet benchmark``: latency, throughput, end-to-end time and memory of each model file.

Every file given is a row of its own (file name and precision), whatever its backend. In tile
mode: end-to-end milliseconds per megapixel and peak memory on photos of given sizes.
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
    model: list[Path] = typer.Option(..., "--model", "-m",
                                     help="Model file(s); repeat for several: each is timed as "
                                          "its own row, e.g. fp32 and int8 ONNX side by side."),
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
) -> None:
    """Time model files side by side in one process (interleaved, so load affects all alike).

    A file that cannot be run on its backend is an error naming it: nothing is left out.
    """
    from cflnet_sdk.fileio import write_bytes_atomic
    from cflnet_sdk.runtime.benchmark import (
        HEADER,
        TILE_HEADER,
        run_benchmark,
        run_tile_benchmark,
    )

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
    results = run(list(model), names, device, tuple(sizes), warmup=warmup,
                  iterations=iterations, log=lambda line: typer.echo(line))
    for r in results:
        if getattr(r, "stages", None):
            parts = ", ".join(f"{k} {v:.1f} ms" for k, v in r.stages.items())
            typer.echo(f"{Path(r.model).name} on {r.backend}: end-to-end stages ({r.size}x"
                       f"{r.size} model, 1024x768 JPEG): {parts}")
    if json_out is not None:
        payload = json.dumps([r.as_dict() for r in results], indent=2) + "\n"
        write_bytes_atomic(json_out, payload.encode("utf-8"))
        typer.echo(f"wrote {json_out}")
