"""``cflnet serve``: serve a model on NVIDIA Triton Inference Server with one command.

The model runs in Triton's Python backend as the whole cflnet pipeline (the repository that
``cflnet-export triton --backend python`` writes, in a temporary folder), on the server that the
``nvidia-pytriton`` wheel bundles. Clients send encoded image files; each request is answered or
refused on its own, so one bad image never fails the others batched with it.
"""

from __future__ import annotations

import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import typer


def _stop_on_sigterm() -> None:
    """SIGTERM (``kill``, a container stop) stops the server in order, as Ctrl-C does."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def serve(
    model: Path | None = typer.Argument(None, help="Model file (.onnx, .engine/.plan, "
                                        ".safetensors); default: the shipped model."),
    name: str = typer.Option("cflnet", "--name", help="Triton model name clients ask for."),
    address: str = typer.Option("0.0.0.0", "--address", help="Bind address of all three "
                                "endpoints (127.0.0.1: this machine only)."),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP/REST (KServe v2) port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", help="Prometheus metrics port."),
    answer: str = typer.Option("probability", "--answer", help="probability (float32 map at "
                               "the image's size) or mask (PNG bytes of the thresholded map)."),
    mode: str | None = typer.Option(None, "--mode", help="resize or tile; default: the "
                                    "model's."),
    backend: str = typer.Option("auto", "--backend", help="auto (from the suffix), torch, "
                                "onnxruntime or tensorrt."),
    kind: str = typer.Option("cpu", "--kind", help="cpu or gpu model instances."),
    instances: int = typer.Option(1, "--instances", min=1, help="Model instances."),
    max_batch: int = typer.Option(8, "--max-batch", min=0, help="Largest dynamic batch of "
                                  "requests (0: no batching)."),
    queue_delay_us: int = typer.Option(100, "--queue-delay-us", min=0,
                                       help="How long a batch waits for more requests."),
    max_queue: int = typer.Option(64, "--max-queue", min=0, help="Requests that may wait; "
                                  "more are refused at once (0: unbounded)."),
    max_pixels: int = typer.Option(40_000_000, "--max-pixels", min=1,
                                   help="Larger images are refused before decoding."),
    verbose: bool = typer.Option(False, "--verbose", help="Triton's verbose log."),
) -> None:
    """Serve a model on Triton (HTTP 8000, gRPC 8001, metrics 8002) until Ctrl-C or SIGTERM."""
    from cflnet_sdk.default_model import require_default_model
    from cflnet_sdk.serving.repository import PythonModelOptions, write_python_repository
    from cflnet_sdk.serving.server import ServerError, ServerOptions, TritonServer

    path = model if model is not None else require_default_model()
    options = PythonModelOptions(name=name, max_batch=max_batch, instances=instances,
                                 kind=kind, queue_delay_us=queue_delay_us,  # type: ignore[arg-type]
                                 max_queue=max_queue, output=answer,  # type: ignore[arg-type]
                                 mode=mode, backend=backend,  # type: ignore[arg-type]
                                 max_pixels=max_pixels)
    where = ServerOptions(address=address, http_port=http_port, grpc_port=grpc_port,
                          metrics_port=metrics_port, verbose=verbose)
    _stop_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="cflnet-serve-") as scratch:
        write_python_repository(path, Path(scratch) / "repository", options)
        server = TritonServer(Path(scratch) / "repository", scratch, where)
        started = time.perf_counter()
        try:
            server.start(timeout_s=600)
            typer.echo(f"serving {path} as model {name!r} on {address} ("
                       f"{time.perf_counter() - started:.1f} s to load): http://{where.http_url} "
                       f"grpc {where.grpc_url} metrics http://{where.client_host}:{metrics_port}"
                       "/metrics; Ctrl-C stops")
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
            status = server.process.returncode if server.process else None
            raise ServerError(f"tritonserver stopped on its own (status {status}); its "
                              "messages are above")
        except KeyboardInterrupt:
            typer.echo("stopping: finishing requests in flight")
        finally:
            server.stop()
    typer.echo("stopped")
