"""Training step: ours (fp32 and bf16 autocast) vs a direct re-implementation of the authors'.

Their step: forward, upsample both outputs to the input size, class-weighted CE plus their
contrastive loss (``authors_loss.py``), Adam over all parameters, fp32. Ours: the loop's own
``train_step`` (CE + the paper's Eq. 2 with an analytic gradient, Adam over trainable
parameters). Steps of all variants alternate in one process, so load hits them alike; the
median step gives samples/s. Peak RSS of each variant comes from a fresh subprocess.

    python benchmarks/bench_train_step.py [--configs default,small] [--steps 3] [--threads 2]
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from authors_loss import authors_patch_contrastive_loss

from cflnet_sdk.training.losses import CE_CLASS_WEIGHTS, CFLNetLoss
from cflnet_sdk.training.train import autocast, build_model, build_optimizer, train_step
from cflnet_sdk.training.train_config import TrainConfig

CONFIGS = {
    "default": TrainConfig(),  # the paper's: ResNet-50, ASPP 512, 256x256, batch 4
    "small": TrainConfig(backbone="resnet18", aspp_channels=128, embedding_dim=64, size=128),
}
VARIANTS = ("ours-fp32", "ours-bf16", "authors-fp32")


def make_batch(config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images and masks with tampered regions of varied size."""
    generator = torch.Generator().manual_seed(1221)
    size, batch = config.size, config.batch_size
    images = torch.randn(batch, 3, size, size, generator=generator)
    masks = torch.zeros(batch, size, size)
    for b in range(batch):
        side = size // (b + 2)
        masks[b, 10:10 + side, 20:20 + side] = 1
    return images, masks


class Step:
    """One variant's model, optimizer and a callable that runs one training step."""

    def __init__(self, variant: str, config: TrainConfig) -> None:
        torch.manual_seed(1221)
        self.variant = variant
        self.model = build_model(config, resume=False)
        if variant.startswith("authors"):
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        else:
            self.optimizer, _ = build_optimizer(self.model, config)
            if variant.endswith("bf16"):
                self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = CFLNetLoss()
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.precision = "bf16" if variant.endswith("bf16") else "fp32"

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> float:
        if self.variant.startswith("authors"):
            return authors_step(self.model, self.optimizer, images, masks)
        if self.precision == "bf16":
            images = images.contiguous(memory_format=torch.channels_last)
        losses = train_step(self.model, self.loss_fn, self.optimizer, self.scaler, images, masks,
                            lambda: autocast(torch.device("cpu"), self.precision))
        return losses["loss"].item()


def authors_step(model, optimizer, images: torch.Tensor, masks: torch.Tensor) -> float:
    """Their training step, fp32: upsample both outputs, CE + their contrastive loss, Adam."""
    optimizer.zero_grad()
    logits, embeddings = model(images)
    size = images.shape[-2:]
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
    embeddings = F.interpolate(embeddings, size=size, mode="bilinear", align_corners=True)
    weight = torch.tensor(CE_CLASS_WEIGHTS)
    loss = (F.cross_entropy(logits, masks.long(), weight=weight)
            + authors_patch_contrastive_loss(embeddings, masks))
    loss.backward()
    optimizer.step()
    return loss.item()


def time_steps(name: str, steps: int, warmup: int, variants: tuple[str, ...] = VARIANTS
               ) -> dict[str, dict[str, float]]:
    """Alternate the variants step by step; median seconds and samples/s of each."""
    config = CONFIGS[name]
    images, masks = make_batch(config)
    runners = {v: Step(v, config) for v in variants}
    times: dict[str, list[float]] = {v: [] for v in variants}
    for index in range(warmup + steps):
        for variant, step in runners.items():
            start = time.perf_counter()
            step(images, masks)
            if index >= warmup:
                times[variant].append(time.perf_counter() - start)
    return {v: {"median_s": statistics.median(t), "min_s": min(t),
                "samples_per_s": config.batch_size / statistics.median(t)}
            for v, t in times.items()}


def peak_rss_gib(name: str, variant: str, threads: int) -> float:
    """Peak RSS (VmHWM) of building the model and running two steps, in a fresh process.

    VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss`` over fork and exec, so a child
    would report this (large) process's peak instead of its own.
    """
    code = (f"import sys, torch; torch.set_num_threads({threads});"
            f"sys.path.insert(0, {str(Path(__file__).parent)!r}); import bench_train_step as b;"
            f"c = b.CONFIGS[{name!r}]; x, m = b.make_batch(c); s = b.Step({variant!r}, c);"
            "s(x, m); s(x, m);"
            "print(b.vm_hwm_gib())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def vm_hwm_gib() -> float:
    """This process's peak resident set size, from /proc/self/status, in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="default,small")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of " + ", ".join(VARIANTS))
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS subprocesses")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for name in args.configs.split(","):
        config = CONFIGS[name]
        variants = tuple(args.variants.split(","))
        timing = time_steps(name, args.steps, args.warmup, variants)
        for variant in variants:
            if not args.no_memory:
                timing[variant]["peak_rss_gib"] = peak_rss_gib(name, variant, args.threads)
            row = timing[variant]
            print(f"{name:8s} {config.backbone} {config.size}x{config.size} b{config.batch_size}"
                  f"  {variant:13s} {row['median_s']:7.3f} s/step  "
                  f"{row['samples_per_s']:7.2f} samples/s  "
                  f"peak RSS {row.get('peak_rss_gib', float('nan')):.2f} GiB", flush=True)
        results[name] = timing
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average after the run: {' '.join(load)}; peak RSS of this process "
          f"{vm_hwm_gib():.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "steps": args.steps,
                                         "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
