"""Serving throughput: a model through Triton (what `cflnet serve` runs, HTTP with binary
tensors) against `Localizer.predict` in-process, at 1, 4 and 8 concurrent clients.

Usage: python scripts/bench_serving.py [--model PATH] [--requests 96] [--instances 1]
Prints one Markdown row per (path, clients): requests/s, p50 and p99 latency; then the server's
load time and resident memory (tritonserver plus its Python stub).
"""

from __future__ import annotations

import argparse
import io
import socket
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from cflnet_sdk import Localizer
from cflnet_sdk.default_model import require_default_model
from cflnet_sdk.serving.repository import PythonModelOptions, write_python_repository
from cflnet_sdk.serving.server import ServerOptions, TritonServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and every process below it, in MB."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier}
        tree |= frontier
    total = 0
    for member in tree:
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def run(call, clients: int, requests: int) -> tuple[float, float, float]:
    """(requests/s, p50 ms, p99 ms) of ``requests`` calls spread over ``clients`` threads."""
    def worker(count: int) -> list[float]:
        send = call()
        times = []
        for _ in range(count):
            start = time.perf_counter()
            send()
            times.append(time.perf_counter() - start)
        return times

    share = [requests // clients + (i < requests % clients) for i in range(clients)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = np.concatenate([np.array(t) for t in pool.map(worker, share)])
    elapsed = time.perf_counter() - start
    return requests / elapsed, *np.percentile(latencies * 1000, [50, 99])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--instances", type=int, default=1, help="Model instances.")
    args = parser.parse_args()
    model = args.model or require_default_model()
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="JPEG", quality=90)
    payload = buffer.getvalue()  # a 512x512 photo, 4 of them per second per core at most

    import tritonclient.http as http

    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "repository"
        write_python_repository(model, repository, PythonModelOptions(max_batch=8,
                                                                          instances=args.instances))
        where = ServerOptions("127.0.0.1", free_port(), free_port(), free_port())
        started = time.perf_counter()
        with TritonServer(repository, scratch, where, log=Path(scratch) / "log") as server:
            load_s = time.perf_counter() - started

            def client():
                connection = http.InferenceServerClient(where.http_url)
                tensor = http.InferInput("image_bytes", [1, 1], "BYTES")
                tensor.set_data_from_numpy(np.array([[payload]], dtype=object))
                wanted = [http.InferRequestedOutput(n, binary_data=True)
                          for n in ("probability", "score", "size")]
                return lambda: connection.infer("cflnet", [tensor], outputs=wanted)

            run(client, 1, 8)  # warm-up
            idle_mb = rss_mb(server.pid)
            print("| path | clients | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
            for clients in (1, 4, 8):
                rps, p50, p99 = run(client, clients, args.requests)
                print(f"| Triton (cflnet serve, HTTP, {args.instances} instance(s)) | {clients} "
                      f"| {rps:.1f} | {p50:.1f} | {p99:.1f} |", flush=True)
            busy_mb = rss_mb(server.pid)
        localizer = Localizer(model, device="cpu")
        run(lambda: lambda: localizer.predict(payload), 1, 8)
        for clients in (1, 4, 8):
            rps, p50, p99 = run(lambda: lambda: localizer.predict(payload), clients,
                                args.requests)
            print(f"| Localizer in-process | {clients} | {rps:.1f} | {p50:.1f} | {p99:.1f} |",
                  flush=True)
    print(f"server: ready {load_s:.1f} s after start; resident memory (tritonserver + stub) "
          f"{idle_mb:.0f} MB after warm-up, {busy_mb:.0f} MB after the runs")


if __name__ == "__main__":
    main()
