"""Contrastive loss: ours vs a direct re-implementation of the authors' formulation.

Times forward and forward+backward for batch 4 at 256x256 (4096 patches, 256-d) alternately
in one process, then measures each one's peak memory in a fresh subprocess.

    python benchmarks/bench_loss.py [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from authors_loss import authors_patch_contrastive_loss

from cflnet_sdk.training.losses import patch_contrastive_loss

IMPLEMENTATIONS = {"ours": patch_contrastive_loss, "authors": authors_patch_contrastive_loss}


def make_inputs(batch: int = 4, size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride-8 embeddings and masks with tampered regions of varied size, like real data."""
    generator = torch.Generator().manual_seed(1221)
    embeddings = torch.randn(batch, 256, size // 8, size // 8, generator=generator)
    mask = torch.zeros(batch, size, size)
    for b in range(batch):
        side = size // (b + 2)
        mask[b, 10:10 + side, 20:20 + 2 * side] = 1
    return embeddings.requires_grad_(), mask


def time_once(name: str, embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    start = time.perf_counter()
    loss = IMPLEMENTATIONS[name](embeddings, mask)
    forward = time.perf_counter() - start
    loss.backward()
    embeddings.grad = None
    return forward, time.perf_counter() - start


def peak_memory_mib(name: str, threads: int) -> float:
    """Peak resident memory above the resident size before one forward+backward.

    Read from /proc (VmHWM, VmRSS) in a fresh process: ru_maxrss would include the parent's
    peak, which a child inherits across fork and exec.
    """
    code = (f"import sys, torch; torch.set_num_threads({threads});"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_loss as b;"
            "e, m = b.make_inputs(); base = b.status_kib('VmRSS');"
            "open('/proc/self/clear_refs', 'w').write('5');"  # reset VmHWM to the current RSS
            f"b.time_once({name!r}, e, m);"
            "print((b.status_kib('VmHWM') - base) / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    embeddings, mask = make_inputs()
    with torch.no_grad():
        values = {n: float(f(embeddings, mask)) for n, f in IMPLEMENTATIONS.items()}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in IMPLEMENTATIONS}
    for name in IMPLEMENTATIONS:  # warm-up
        time_once(name, embeddings, mask)
    for _ in range(args.repeats):
        for name in IMPLEMENTATIONS:
            times[name].append(time_once(name, embeddings, mask))
    report = {}
    for name, runs in times.items():
        report[name] = {
            "loss": values[name],
            "forward_s": statistics.median(r[0] for r in runs),
            "forward_backward_s": statistics.median(r[1] for r in runs),
            "peak_rss_growth_mib": peak_memory_mib(name, args.threads),
        }
    report["speedup_forward_backward"] = (report["authors"]["forward_backward_s"]
                                          / report["ours"]["forward_backward_s"])
    report["speedup_forward"] = report["authors"]["forward_s"] / report["ours"]["forward_s"]
    report["torch"] = torch.__version__
    report["threads"] = args.threads
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
