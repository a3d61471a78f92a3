"""``cflnet benchmark``: latency, throughput, end-to-end time and memory of each backend."""

from __future__ import annotations

import json
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
                                     help="Model file(s); repeat for several. A checkpoint is "
                                          "exported to ONNX for onnxruntime if no .onnx given."),
    backend: str = typer.Option("auto", "--backend",
                                help="Comma-separated: torch,onnxruntime,tensorrt; auto = the "
                                     "backend of each --model's suffix."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    batch_sizes: str = typer.Option("1,8", "--batch-sizes", help="Comma-separated batch sizes."),
    size: int = typer.Option(256, "--size", min=32, help="Input height and width (pixels)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write results as JSON."),
    warmup: int = typer.Option(3, "--warmup", min=0, help="Untimed calls per backend first."),
    iterations: int = typer.Option(20, "--iterations", min=1, help="Timed calls per backend."),
) -> None:
    """Run backends side by side in one process (interleaved, so load affects all alike)."""
    from cflnet_sdk.fileio import write_bytes_atomic
    from cflnet_sdk.runtime.base import resolve
    from cflnet_sdk.runtime.benchmark import HEADER, run_benchmark

    if backend == "auto":
        names = list(dict.fromkeys(resolve(m).name for m in model))
    else:
        names = parse_list(backend, "--backend")
    try:
        sizes = tuple(int(b) for b in parse_list(batch_sizes, "--batch-sizes"))
    except ValueError as exc:
        raise ConfigError(f"--batch-sizes {batch_sizes!r}: integers expected") from exc
    typer.echo(HEADER)
    results = run_benchmark(list(model), names, device=device, batch_sizes=sizes, size=size,
                            warmup=warmup, iterations=iterations,
                            log=lambda line: typer.echo(line))
    for r in results:
        if r.stages:
            parts = ", ".join(f"{k} {v:.1f} ms" for k, v in r.stages.items())
            typer.echo(f"{r.backend} end-to-end stages ({r.size}x{r.size} model, 1024x768 "
                       f"JPEG): {parts}")
    if json_out is not None:
        payload = json.dumps([r.as_dict() for r in results], indent=2) + "\n"
        write_bytes_atomic(json_out, payload.encode("utf-8"))
        typer.echo(f"wrote {json_out}")
