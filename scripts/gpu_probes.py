"""The GPU check's measurements, run in a child process that scripts/gpu_check.py starts.

    python scripts/gpu_probes.py --records FILE --work DIR --budget-end T [--dry-run WHY] \
        "NAME=LIMIT" ...

Why a child: a probe that hangs (an NCCL group) or crashes (a CUDA fault) must cost only its own
time limit: the parent stops the child there and starts another for the probes left. Every
finished measurement is one JSON line in FILE, flushed at once, so a kill keeps what finished.
Without CUDA (or with --dry-run) the same code runs on the CPU with small stand-ins and single
iterations: the dry run goes through every path but the GPU's own.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, TextIO

import checkout

# fp32: strict float32 (TF32 off); tf32: cuDNN's TF32 convolutions, PyTorch's default on CUDA
# and so what the torch backend runs; fp16/bf16: torch.autocast around the network.
PRECISIONS = ("fp32", "tf32", "fp16", "bf16")
TILE_PRECISIONS = ("tf32", "fp16")
TRAIN_PRECISIONS = ("fp16", "bf16")  # AMP: fp16 with a GradScaler, bf16 without
FP32_ATOL = 1e-3  # GPU against CPU in float32: the kernels sum in other orders


@dataclass(frozen=True)
class Sizes:
    """How much each probe does: a GPU run's figures, or the dry run's smallest that still
    goes through every path."""

    batches: tuple[int, ...]
    warmup: int
    iterations: int
    photos: int  # parity: packaged photos in resize mode
    odd_photo_pixels: int  # parity: tile mode on the odd-size photo nearest this many pixels
    tile_megapixels: float
    train_steps: int  # the first is not timed (kernel selection)
    precisions: tuple[str, ...] = PRECISIONS  # parity and latency tables
    tiled: tuple[str, ...] = TILE_PRECISIONS


GPU_SIZES = Sizes(batches=(1, 8, 32), warmup=3, iterations=10, photos=4,
                  odd_photo_pixels=600 * 800, tile_megapixels=12.0, train_steps=4)


def cpu_precisions() -> tuple[str, ...]:
    """The PRECISIONS this CPU has oneDNN kernels for. Without them PyTorch falls back to
    kernels that are slower by a factor of 50 or more (the default model, one 256x256 image on
    a CPU without fp16 kernels: 6 s in fp16, 0.08 s in bf16), which would stop a dry run at its
    limit and prove nothing the fp32 run does not."""
    import torch

    def has(kernels: str) -> bool:
        check = getattr(torch.ops.mkldnn, f"_is_mkldnn_{kernels}_supported", None)
        return bool(check and check())

    return tuple(name for name in PRECISIONS if name not in ("fp16", "bf16") or has(name))


def dry_sizes() -> Sizes:
    """The dry run's: one photo, batches of 1 and 2, the precisions this CPU runs fast."""
    fast = cpu_precisions()
    return Sizes(batches=(1, 2), warmup=0, iterations=1, photos=1, odd_photo_pixels=0,
                 tile_megapixels=0.1, train_steps=2, precisions=fast,
                 tiled=tuple(name for name in TILE_PRECISIONS if name in fast))


def budget_skip(limit_s: float, left_s: float) -> str | None:
    """Why a step is not started (less than half its limit left), or None: it starts."""
    if left_s < limit_s / 2:
        return f"time budget: {max(left_s, 0):.0f} s left, the step may take {limit_s:.0f} s"
    return None


class Probe:
    """What a probe writes to and runs on; ``emit`` flushes every record at once."""

    def __init__(self, records: TextIO, work: Path, dry: str | None, device: str) -> None:
        self.records, self.work, self.dry, self.device = records, work, dry, device
        self.sizes = dry_sizes() if dry else GPU_SIZES

    def emit(self, **record: Any) -> None:
        self.records.write(json.dumps(record) + "\n")
        self.records.flush()

    def row(self, table: str, **row: Any) -> None:
        if self.dry:
            row["note"] = "dry run: CPU stand-in, not a measurement"
        self.emit(row={"table": table, "device": self.device, **row})

    @contextmanager
    def peak_memory(self) -> Iterator[dict[str, float | None]]:
        """``{"gpu_memory_mb": peak allocated in the block}`` (None on the CPU)."""
        import torch

        found: dict[str, float | None] = {"gpu_memory_mb": None}
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        yield found
        if self.device == "cuda":
            found["gpu_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20


# -- environment -------------------------------------------------------------------------------
def version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(probe: Probe) -> str:
    """Versions, the CUDA device and its math defaults, and which other backends import."""
    import torch

    facts: dict[str, Any] = {
        "python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "timm": version("timm"), "onnxslim": version("onnxslim"),
        "polygraphy": version("polygraphy")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(cuda_device=props.name, compute_capability=f"{props.major}.{props.minor}",
                     gpu_memory_gb=round(props.total_memory / 2**30, 1),
                     cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                     nccl=str(torch.cuda.nccl.version()),
                     tf32_defaults={"cudnn": torch.backends.cudnn.allow_tf32,
                                    "matmul": torch.backends.cuda.matmul.allow_tf32})
    try:
        import onnxruntime

        facts.update(onnxruntime=onnxruntime.__version__,
                     onnxruntime_providers=onnxruntime.get_available_providers())
    except (ImportError, OSError) as exc:  # absent, or its libraries are missing
        facts["onnxruntime_error"] = str(exc)
    try:
        import tensorrt

        facts["tensorrt"] = tensorrt.__version__
    except (ImportError, OSError) as exc:  # absent, or its libraries are missing
        facts["tensorrt_error"] = str(exc)
    probe.emit(fact=facts)
    return (f"torch {torch.__version__} on {facts.get('cuda_device', 'the CPU')}"
            + (f" ({probe.dry})" if probe.dry else ""))


# -- PyTorch inference -------------------------------------------------------------------------
def paper_checkpoint(probe: Probe) -> tuple[str, Path]:
    """(name, path) of the paper's ResNet-50 CFL-Net at 256x256 with random weights, written
    once per run (dry run: timm's tiny test_resnet trunks at 64x64)."""
    name = "paper-standin" if probe.dry else "paper-resnet50"
    path = probe.work / f"{name}.safetensors"
    if not path.is_file():
        from cflnet_sdk.contract import Contract
        from cflnet_sdk.training.checkpoint import save_checkpoint
        from cflnet_sdk.training.config import CFLNetConfig
        from cflnet_sdk.training.model import CFLNet

        config = (CFLNetConfig(backbone="test_resnet", aspp_channels=16, embedding_dim=8)
                  if probe.dry else CFLNetConfig())
        size = 64 if probe.dry else 256
        save_checkpoint(CFLNet(config).eval(), path, contract=Contract(size, size))
    return name, path


def model_file(probe: Probe, which: str) -> tuple[str, Path]:
    if which == "default":
        from cflnet_sdk.default_model import named_checkpoint

        return "default", Path(named_checkpoint("default"))
    return paper_checkpoint(probe)


class Autocast:
    """The network under ``torch.autocast``, its output back in float32 as the backend expects.
    A wrapper rather than a context: the Localizer may call the backend from other threads."""

    def __init__(self, network: Any, device_type: str, dtype: Any) -> None:
        self.network, self.device_type, self.dtype = network, device_type, dtype

    def __call__(self, x: Any) -> Any:
        import torch

        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.network(x).float()


@contextmanager
def precision(backend: Any, name: str) -> Iterator[None]:
    """Run the torch backend's network in one of PRECISIONS, restoring it afterwards."""
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             backend.network)
    torch.backends.cudnn.allow_tf32 = name == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = False
    if name in ("fp16", "bf16"):
        dtype = torch.float16 if name == "fp16" else torch.bfloat16
        backend.network = Autocast(backend.network, backend.device.split(":")[0], dtype)
    try:
        yield
    finally:
        (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
         backend.network) = saved


def parity(probe: Probe, model: str, cpu: Any, device: Any) -> bool:
    """Photos in resize mode (in each of the sizes' precisions) and a tile-mode photo of odd
    size (fp32), GPU against CPU; True when fp32 is within FP32_ATOL (lower precisions are
    reported only)."""
    import numpy as np

    from cflnet_sdk.export.parity import Probes, figures, odd_size_photos, photo_probes

    contract = cpu.contract
    photos = photo_probes(contract, count=probe.sizes.photos)
    batch = np.concatenate(photos.inputs)
    reference = cpu.backend.run(batch)
    odd = min(odd_size_photos(), key=lambda rgb: abs(rgb.size - probe.sizes.odd_photo_pixels))
    checks = []
    for name in probe.sizes.precisions:
        with precision(device.backend, name):
            checks.append((name, f"{photos.name}, resize", Probes(photos.name, [batch]),
                           reference, device.backend.run(batch)))
    with precision(device.backend, "fp32"):
        checks.append(("fp32", f"tile mode, photo {odd.shape[0]}x{odd.shape[1]}",
                       Probes("tile", [odd[None]]), cpu.predict(odd).probability[None],
                       device.predict(odd).probability[None]))
    passed = True
    for name, label, probes, expected, found in checks:
        result = figures(probes, [expected], [found], contract.threshold)
        judged, ok = name == "fp32", result.max_abs <= FP32_ATOL
        passed &= ok or not judged
        probe.row("parity", model=model, precision=name, probes=label, images=result.images,
                  max_abs=result.max_abs, mean_abs=result.mean_abs, mask_iou=result.mask_iou,
                  atol=FP32_ATOL if judged else None,
                  verdict=("pass" if ok else "FAIL") if judged else "reported")
    return passed


def latency(probe: Probe, model: str, localizer: Any) -> None:
    """Model latency per batch size in each of the sizes' precisions, as ``cflnet benchmark``
    measures it (numpy batch in, probability back on the host)."""
    import numpy as np

    contract, sizes = localizer.contract, probe.sizes
    for name in sizes.precisions:
        with precision(localizer.backend, name):
            for batch in sizes.batches:
                x = np.random.default_rng(0).standard_normal(
                    (batch, contract.channels, *contract.size)).astype(np.float32)
                times = []
                with probe.peak_memory() as memory:
                    for i in range(sizes.warmup + sizes.iterations):
                        began = time.perf_counter()
                        localizer.backend.run(x)
                        if i >= sizes.warmup:
                            times.append((time.perf_counter() - began) * 1000.0)
                p50 = statistics.median(times)
                probe.row("latency", model=model, backend="torch", precision=name,
                          batch_size=batch, latency_p50=p50, latency_min=min(times),
                          throughput=batch * 1000.0 / p50, **memory)


def phone_photo(megapixels: float) -> Any:
    """A real packaged photo resized to ``megapixels`` (4:3), as a phone would take it."""
    import numpy as np
    from PIL import Image

    from cflnet_sdk.training.data.sources import PhotoSource

    source = PhotoSource()
    photo = max((source.photo(i) for i in range(len(source))), key=lambda p: p.size)
    height = round((megapixels * 1e6 * 3 / 4) ** 0.5)
    width = height * 4 // 3
    return np.asarray(Image.fromarray(photo).resize((width, height), Image.BICUBIC))


def tile_timing(probe: Probe, model: str, localizer: Any) -> None:
    """End-to-end tile-mode predict on one photo of ``tile_megapixels``, per precision."""
    from cflnet_sdk.tiling import tile_count

    rgb = phone_photo(probe.sizes.tile_megapixels)
    tiles = tile_count(*rgb.shape[:2], localizer.contract)
    for name in probe.sizes.tiled:
        with precision(localizer.backend, name):
            began = time.perf_counter()
            localizer.predict(rgb)
            ms = (time.perf_counter() - began) * 1000.0
        megapixels = rgb.shape[0] * rgb.shape[1] / 1e6
        probe.row("tile", model=model, precision=name, megapixels=megapixels, tiles=tiles,
                  ms_per_image=ms, ms_per_megapixel=ms / megapixels)


def inference(probe: Probe, which: str) -> tuple[str, bool]:
    """The torch backend on one model: parity with the CPU, latency, tile mode."""
    from cflnet_sdk import Localizer

    model, path = model_file(probe, which)
    cpu, device = (Localizer(path, backend="torch", device=name, mode="tile")
                   for name in ("cpu", probe.device))
    passed = parity(probe, model, cpu, device)
    latency(probe, model, device)
    tile_timing(probe, model, device)
    sizes = probe.sizes
    left_out = [name for name in PRECISIONS if name not in sizes.precisions]
    return (f"fp32 {'within' if passed else 'OUTSIDE'} {FP32_ATOL:g} of the CPU; timed "
            f"{'/'.join(sizes.precisions)} at batch {'/'.join(map(str, sizes.batches))}, tile "
            f"mode on {sizes.tile_megapixels:g} MP" + (f"; {'/'.join(left_out)} not run (no "
            "fast kernels on this CPU)" if left_out else "")), passed


# -- training ----------------------------------------------------------------------------------
@cache
def training_setup(dry: bool, device: str) -> tuple[Any, Any, Any, Any]:
    """(config, model, images, masks): the paper's recipe (ResNet-50, batch 4 at 256) on real
    synthetic forgeries; dry run: timm's tiny test_resnet trunks at 64x64, batch 2."""
    import torch

    from cflnet_sdk.training.data.synth import SynthConfig, SynthDataset
    from cflnet_sdk.training.data.torch_dataset import ForgeryTorchDataset
    from cflnet_sdk.training.train import build_model
    from cflnet_sdk.training.train_config import TrainConfig

    config = (TrainConfig(backbone="test_resnet", aspp_channels=16, embedding_dim=8, size=64,
                          batch_size=2, device=device) if dry else TrainConfig(device=device))
    model = build_model(config, resume=False).to(device)
    source = SynthDataset(SynthConfig(seed=5, height=config.size, width=config.size,
                                      pristine_rate=0.0), length=config.batch_size)
    dataset = ForgeryTorchDataset(source, config.contract())
    images, masks = (torch.stack(parts).to(device) for parts in zip(
        *(dataset[i] for i in range(config.batch_size)), strict=True))
    return config, model, images, masks


def train_steps(probe: Probe, model: Any, name: str, path: str) -> tuple[str, str]:
    """``train_step`` (the loop's own) a few times in one AMP precision; (status, note)."""
    import math

    import torch

    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.training.losses import CFLNetLoss
    from cflnet_sdk.training.train import autocast, build_optimizer, check_precision, train_step

    config, _, images, masks = training_setup(bool(probe.dry), probe.device)
    device = torch.device(probe.device)
    try:
        check_precision(device, name)
    except ConfigError as exc:
        return "skipped", f"{name}: {exc}"
    optimizer, _ = build_optimizer(model, config)
    scaler = torch.amp.GradScaler(device.type, enabled=name == "fp16")
    loss_fn = CFLNetLoss(config.contrastive_weight, config.patch_size, config.temperature,
                         tuple(config.class_weights))
    losses, times = [], []
    with probe.peak_memory() as memory:
        for _ in range(probe.sizes.train_steps):
            began = time.perf_counter()
            step = train_step(model, loss_fn, optimizer, scaler, images, masks,
                              lambda: autocast(device, name))
            losses.append(step["loss"].item())  # .item() waits for the step
            times.append((time.perf_counter() - began) * 1000.0)
    probe.row("training", model=config.backbone, precision=name, path=path,
              batch_size=config.batch_size, steps=len(losses),
              ms_per_step=statistics.median(times[1:]), loss_first=losses[0],
              loss_last=losses[-1], **memory)
    if not all(map(math.isfinite, losses)):
        return "failed", f"{name}: a loss was not finite ({losses})"
    return "ok", f"{name}: {len(losses)} steps"


def training(probe: Probe) -> tuple[str, bool]:
    """A few optimizer steps with AMP (fp16 with its GradScaler, bf16) on the paper's recipe."""
    _, model, _, _ = training_setup(bool(probe.dry), probe.device)
    results = [train_steps(probe, model, name, "train_step") for name in TRAIN_PRECISIONS]
    return "; ".join(note for _, note in results), all(s != "failed" for s, _ in results)


def amp_precision(device: Any) -> str:
    """The first of TRAIN_PRECISIONS the device trains in (fp32 if none)."""
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.training.train import check_precision

    for name in TRAIN_PRECISIONS:
        try:
            check_precision(device, name)
        except ConfigError:
            continue
        return name
    return "fp32"


def ddp(probe: Probe) -> tuple[str, bool]:
    """One process group of size 1 (NCCL on CUDA, gloo on the CPU), DistributedDataParallel
    around the model, AMP steps through it and the loop's all-reduce, then the teardown."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from cflnet_sdk.training import distributed

    cuda = probe.device == "cuda"
    device = torch.device("cuda", 0) if cuda else torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                            device_id=device if cuda else None)
    try:
        _, model, _, _ = training_setup(bool(probe.dry), probe.device)
        wrapped = DistributedDataParallel(model, device_ids=[0] if cuda else None)
        status, note = train_steps(probe, wrapped, amp_precision(device),
                                   f"DDP, {backend}, world 1")
        total = distributed.all_sum([1.0], device)
    finally:
        distributed.teardown()
    if total != [1.0]:
        return f"all_sum over one rank gave {total}, not [1.0]", False
    return f"{backend} group of 1: {note}; all_sum ok", status != "failed"


# -- ONNX export -------------------------------------------------------------------------------
def export(probe: Probe) -> tuple[str, bool]:
    """fp32 and fp16 ONNX files of both models, for the engine and ONNX Runtime steps."""
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.onnx import build_onnx, read_metadata, save_onnx
    from cflnet_sdk.export.precision import make_variant
    from cflnet_sdk.metadata import CONTRACT_KEY

    written = []
    for which in ("default", "paper"):
        model, path = model_file(probe, which)
        fp32 = build_onnx(path, simplify=version("onnxslim") is not None)
        for name in ("fp32", "fp16"):
            out = save_onnx(make_variant(fp32, name), probe.work / f"{model}-{name}.onnx")
            contract = Contract.from_json(read_metadata(out)[CONTRACT_KEY])
            probe.emit(file={"model": model, "precision": name, "path": str(out),
                             "shape": f"{contract.channels}x{contract.height}x{contract.width}"})
            written.append(f"{out.name} ({out.stat().st_size / 1e6:.1f} MB)")
    return ", ".join(written), True


PROBES: dict[str, Callable[[Probe], tuple[str, bool]]] = {
    "environment": lambda probe: (environment(probe), True),
    "torch default model": lambda probe: inference(probe, "default"),
    "torch paper ResNet-50": lambda probe: inference(probe, "paper"),
    "training with AMP": training,
    "DDP process group": ddp,
    "ONNX export fp32/fp16": export,
}


def run(probe: Probe, steps: list[tuple[str, float]], budget_end: float) -> None:
    """Each step in turn: skipped when the budget cannot hold it, else run; an exception fails
    that step alone (traceback to stderr, the check's log)."""
    for name, limit in steps:
        reason = budget_skip(limit, budget_end - time.time())
        if reason:
            probe.emit(end=name, status="skipped", detail=reason)
            continue
        try:
            detail, passed = PROBES[name](probe)
            status = "ok" if passed else "failed"
        except Exception as exc:
            traceback.print_exc()
            status, detail = "failed", f"{type(exc).__name__}: {exc}"
        probe.emit(end=name, status=status, detail=detail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--budget-end", type=float, required=True, help="time.time() value")
    parser.add_argument("--dry-run", metavar="WHY")
    parser.add_argument("steps", nargs="+", help="NAME=LIMIT_SECONDS, run in this order")
    args = parser.parse_args()
    checkout.install()
    import torch

    dry = args.dry_run or (None if torch.cuda.is_available() else
                           f"torch {torch.__version__} sees no CUDA device")
    if dry:  # stand-ins, not measurements: one thread keeps a shared CPU from thrashing
        torch.set_num_threads(1)
    steps = [(name, float(limit)) for name, limit in (s.rsplit("=", 1) for s in args.steps)]
    with args.records.open("a") as records:
        probe = Probe(records, args.work, dry, "cpu" if dry else "cuda")
        probe.emit(fact={"probe_device": probe.device, "dry_run": dry})
        run(probe, steps, args.budget_end)


if __name__ == "__main__":
    sys.exit(main())
