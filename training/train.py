"""The training loop: the paper's recipe with exact resume, mixed precision, one GPU to many.

One code path for one process and for ``torchrun`` (DistributedDataParallel): rank 0 logs and
writes the run directory, every rank trains its shard. State is saved every ``save_every`` steps
and at each epoch end, and when SIGINT/SIGTERM arrives (at the next step boundary), so a run
continues from its last save with the very batch it would have trained next.
"""

from __future__ import annotations

import csv
import io
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cflnet_sdk.errors import ConfigError
from cflnet_sdk.fileio import write_bytes_atomic
from cflnet_sdk.training import distributed
from cflnet_sdk.training.train_config import TrainConfig
from cflnet_sdk.training.train_data import (
    DataSources,
    EpochSampler,
    check_size,
    dataset_sources,
    make_loader,
    synthetic_sources,
)

Log = Callable[[str], None]
StepHook = Callable[[int, dict[str, torch.Tensor]], None]
LOSS_TERMS = ("loss", "ce", "contrastive", "image")  # what CFLNetLoss returns, logged per epoch
EPOCH_SUMS = (*LOSS_TERMS, "steps", "samples", "seconds")
VAL_KEYS = ("pixel_auc", "pixel_auc_flip_invariant_paper", "pooled_pixel_auc", "pixel_f1",
            "pixel_iou", "pixel_f1_best", "pixel_iou_best", "image_auc", "images",
            "pixel_auc_skipped_single_class")
CSV_FIELDS = ("epoch", "step", "lr", *LOSS_TERMS, "samples_per_s", "seconds",
              *(f"val_{k}" for k in VAL_KEYS))


class TrainingDivergedError(ConfigError):
    """The loss became NaN or infinite."""


@dataclass
class Position:
    """Where a run stands: the next batch to train and the running sums of this epoch."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(EPOCH_SUMS, 0.0))
    best_auc: float | None = None
    best_epoch: int | None = None


@dataclass
class RunResult:
    """How a call to ``train`` ended: ``finished``, ``interrupted`` (signal) or ``max_steps``."""

    status: str
    run_dir: Path
    step: int
    epoch: int
    best_auc: float | None
    last_val: dict[str, Any] | None


# -- pieces ---------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bf16 autocast on CPU or CUDA, fp16 on CUDA (with a GradScaler), or nothing for fp32."""
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def check_precision(device: torch.device, precision: str) -> None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA GPU (its GradScaler is CUDA-only); "
                          "use --precision bf16 on the CPU")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU has no bf16; use --precision fp16 or fp32")


def precision_warning(device: torch.device, precision: str) -> str | None:
    """Why bf16 may be slower than fp32 here: without AVX-512 BF16/AMX, oneDNN has no bf16
    convolution and PyTorch falls back to a slow im2col path (measured 8x slower)."""
    if precision == "bf16" and device.type == "cpu" and not (
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return ("warning: this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 "
                "convolutions take a slow fallback path; --precision fp32 is faster here")
    return None


def build_model(config: TrainConfig, resume: bool) -> nn.Module:
    """A CFL-Net in train mode, from ``--init``'s weights if given; the projection head is
    frozen for the CE-only ablation."""
    from cflnet_sdk.training.config import CFLNetConfig
    from cflnet_sdk.training.model import CFLNet

    contract = config.contract()
    model = CFLNet(CFLNetConfig(backbone=config.backbone, srm=config.srm,
                                aspp_channels=config.aspp_channels,
                                embedding_dim=config.embedding_dim,
                                pretrained_backbone=None if resume else
                                config.pretrained_backbone,
                                extra_channels=contract.channels - 3))
    model.contract = contract
    if config.init and not resume:  # a resumed run's weights come from its own state
        from cflnet_sdk.training.checkpoint import load_weights, model_state, read_checkpoint

        load_weights(model, model_state(read_checkpoint(config.init)[0]), config.init)
    if config.contrastive_weight == 0:  # no loss reaches it: keep it out of Adam and DDP
        model.projection.requires_grad_(False)
    return model.train()


def build_optimizer(model: nn.Module, config: TrainConfig
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    """Adam over trainable parameters only (the SRM kernels are fixed) and the step schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step_epochs, config.lr_gamma)
    return optimizer, scheduler


def train_step(model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, images: torch.Tensor, masks: torch.Tensor,
               precision_context: Callable[[], AbstractContextManager],
               ) -> dict[str, torch.Tensor]:
    """Forward (under autocast), the losses in float32, backward, Adam step."""
    optimizer.zero_grad(set_to_none=True)
    with precision_context():
        logits, embeddings = model(images)
    losses = loss_fn(logits, embeddings, masks)
    scaler.scale(losses["loss"]).backward()
    scaler.step(optimizer)
    scaler.update()
    return {name: value.detach() for name, value in losses.items()}


@torch.no_grad()
def validate(model: nn.Module, loader, device: torch.device,
             precision_context: Callable[[], AbstractContextManager]):
    """This rank's ``MetricAccumulator`` over the validation loader (model-size maps)."""
    from cflnet_sdk.prediction import image_score
    from cflnet_sdk.training.metrics import MetricAccumulator

    accumulator = MetricAccumulator()
    was_training = model.training
    model.eval()
    for images, masks in loader:
        with precision_context():
            probability = model.tamper_probability(images.to(device, non_blocking=True))
        for p, m in zip(probability[:, 0].float().cpu().numpy(), masks.numpy() > 0.5,
                        strict=True):
            accumulator.update(p, m, image_score(p))
    model.train(was_training)
    return accumulator


class StopSignal:
    """SIGINT/SIGTERM set ``requested``; the loop saves at the next step boundary and stops.

    A second signal raises ``KeyboardInterrupt`` at once, for a user who will not wait.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Display:
    """A tqdm bar on a terminal, plain lines otherwise; rank 0 only."""

    def __init__(self, config: TrainConfig, log: Log, enabled: bool) -> None:
        self.log, self.enabled, self.every = log, enabled, max(1, config.log_every)
        self.use_bar = enabled and config.progress and sys.stderr.isatty()
        self.bar: Any = None

    def start_epoch(self, epoch: int, epochs: int, total: int, done: int) -> None:
        if self.use_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}",
                            dynamic_ncols=True, leave=False)

    def step(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def show(self, text: str, fields: dict[str, str]) -> None:
        if self.bar is not None:
            self.bar.set_postfix(fields, refresh=False)
        elif self.enabled:
            self.log(f"{text}  " + "  ".join(f"{k} {v}" for k, v in fields.items()))

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def open_tensorboard(run_dir: Path) -> Any:
    """A SummaryWriter in ``RUN_DIR/tb`` when tensorboard is installed, else None."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tb"))


# -- the run --------------------------------------------------------------------------------
class Trainer:
    """Everything a run holds; ``run`` trains until done, ``max_steps`` or a signal."""

    def __init__(self, config: TrainConfig, resume: bool, log: Log,
                 on_step: StepHook | None = None) -> None:
        config.check_data()
        self.config, self.on_step = config, on_step
        self.info = distributed.from_environment()
        self.device = distributed.resolve_device(config.device, self.info)
        check_precision(self.device, config.precision)
        self.main = self.info.is_main
        self.log = log if self.main else (lambda _: None)
        self.run_dir = Path(config.out or time.strftime("runs/cflnet-%Y%m%d-%H%M%S"))
        self._prepare_run_dir(resume)
        distributed.setup(self.device, self.info)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._build(resume)
        self.position = Position()
        if resume:
            self._restore()
        # --max-steps counts the steps of this invocation, so a resumed run can be time-boxed too
        self.stop_step = self.position.step + config.max_steps if config.max_steps else None
        self.display = Display(config, self.log, self.main)
        self.tensorboard = open_tensorboard(self.run_dir) if self.main else None
        self.window: list[dict[str, torch.Tensor]] = []
        self.window_start = time.perf_counter()
        self.last_val: dict[str, Any] | None = None

    def _prepare_run_dir(self, resume: bool) -> None:
        from cflnet_sdk.training.state import has_state

        if not resume and has_state(self.run_dir):
            raise ConfigError("this folder already holds a training run; continue it with "
                              f"--resume {self.run_dir} or choose another --out", self.run_dir)
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config = self.config.updated({"out": str(self.run_dir)})
            write_bytes_atomic(self.run_dir / "config.yaml", config.to_yaml().encode("utf-8"))

    def _build(self, resume: bool) -> None:
        config, device = self.config, self.device
        seed_everything(config.seed)
        self.model = build_model(config, resume).to(device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer, self.scheduler = build_optimizer(self.model, config)
        self.ema = None
        if config.ema_decay:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=config.ema_decay, use_warmup=True)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        from cflnet_sdk.training.losses import CFLNetLoss

        self.loss_fn = CFLNetLoss(config.contrastive_weight, config.patch_size,
                                  config.temperature, tuple(config.class_weights),
                                  config.image_weight)
        self.forward_model: nn.Module = self.model
        if self.info.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.forward_model = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        if config.compile:
            self.forward_model = torch.compile(self.forward_model)
        torch.manual_seed(config.seed + self.info.rank)  # dropout differs between ranks
        self._build_data()

    def _build_data(self) -> None:
        config, info = self.config, self.info
        sources: DataSources = (synthetic_sources(config, info.world_size) if config.synthetic
                                else dataset_sources(config, self.log))
        self.log(f"data: {sources.description}")
        size = sources.block if sources.stream else len(sources.train)
        self.train_sampler = EpochSampler(size, config.batch_size, seed=config.seed,
                                          shuffle=not sources.stream, drop_last=True,
                                          stream=sources.stream, rank=info.rank,
                                          world=info.world_size)
        check_size(self.train_sampler, size, config, info.world_size)
        self.train_loader = make_loader(sources.train, self.train_sampler, config, self.device,
                                        train=True)
        self.val_loader = None
        if sources.val is not None and len(sources.val):
            sampler = EpochSampler(len(sources.val), config.batch_size, rank=info.rank,
                                   world=info.world_size)
            self.val_loader = make_loader(sources.val, sampler, config, self.device,
                                          train=False)

    def precision_context(self) -> AbstractContextManager:
        return autocast(self.device, self.config.precision)

    @property
    def kept_model(self) -> nn.Module:
        """The weights validated and saved: their moving average under ``--ema-decay``."""
        return self.model if self.ema is None else self.ema.module

    # -- state ----------------------------------------------------------------------------
    def _payload(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        p = self.position
        return {"epoch": p.epoch, "batch": p.batch, "step": p.step, "sums": p.sums,
                "best_auc": p.best_auc, "best_epoch": p.best_epoch,
                "world_size": self.info.world_size, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": rngs, "config": self.config.to_dict(),
                "ema": None if self.ema is None else self.ema.module.state_dict()}

    def save(self, weights: Path | None = None) -> None:
        """``last.safetensors`` (a copy of ``weights`` when this epoch's are already written)
        and the resume state; every rank must call it (RNG gather)."""
        from cflnet_sdk.fileio import copy_atomic
        from cflnet_sdk.training.checkpoint import save_checkpoint
        from cflnet_sdk.training.state import rng_state, save_state

        self._flush_window()
        rngs = distributed.gather(rng_state())
        if self.main:
            last = self.run_dir / "last.safetensors"
            if weights is not None:
                copy_atomic(weights, last)
            else:
                save_checkpoint(self.kept_model, last)
            save_state(self.run_dir, self.model.state_dict(), self._payload(rngs))
        distributed.barrier()

    def _restore(self) -> None:
        from cflnet_sdk.training.state import load_state, set_rng_state

        model_state, payload = load_state(self.run_dir)
        self.model.load_state_dict(model_state, strict=True)
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(payload["ema"], strict=True)
        self.position = Position(payload["epoch"], payload["batch"], payload["step"],
                                 # runs saved before the image loss lack its sum
                                 {**dict.fromkeys(EPOCH_SUMS, 0.0), **payload["sums"]},
                                 payload["best_auc"], payload["best_epoch"])
        rngs = payload["rng"]
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank])
        else:
            self.log(f"resuming {len(rngs)}-process state on {self.info.world_size} "
                     "process(es): data order and dropout differ from an uninterrupted run")
            self.position.batch = 0  # shards differ, so restart the epoch's data order
        self.log(f"resumed {self.run_dir} at epoch {self.position.epoch + 1}, batch "
                 f"{self.position.batch}, step {self.position.step}")

    # -- training ---------------------------------------------------------------------------
    def run(self) -> RunResult:
        config, p = self.config, self.position
        self.log(f"training {config.backbone} CFL-Net at {config.size}x{config.size}, batch "
                 f"{config.batch_size} x {self.info.world_size} process(es), {config.precision} "
                 f"on {self.device}, {config.epochs} epochs -> {self.run_dir}"
                 + (f" (fine-tuning {config.init})" if config.init else ""))
        warning = precision_warning(self.device, config.precision)
        if warning:
            self.log(warning)
        status = "finished"
        with StopSignal() as stop:
            while p.epoch < config.epochs:
                status = self._train_epoch(stop)
                if status != "finished":
                    break
                self._end_epoch()
                if p.epoch >= config.epochs:
                    break
                if self.stop_step is not None and p.step >= self.stop_step:
                    status = "max_steps"
                    break
                if distributed.any_rank(stop.requested is not None, self.device):
                    status = "interrupted"
                    break
        if status != "finished":
            self.save()
            self.log(f"{status} at step {p.step}: state saved; continue with "
                     f"`cflnet train --resume {self.run_dir}`")
        if self.tensorboard is not None:
            self.tensorboard.close()
        return RunResult(status, self.run_dir, p.step, p.epoch, p.best_auc, self.last_val)

    def _train_epoch(self, stop: StopSignal) -> str:
        """Train from the current batch to the epoch end; or stop early, leaving state unsaved."""
        config, p = self.config, self.position
        total = self.train_sampler.batches_per_epoch()
        self.train_sampler.set_epoch(p.epoch, p.batch)
        self.display.start_epoch(p.epoch, config.epochs, total, p.batch)
        self.window_start = time.perf_counter()
        try:
            for images, masks in self.train_loader:
                if p.batch >= total:
                    break
                self._step(images, masks)
                if p.batch >= total:  # the epoch end comes first, then run() checks the stops
                    break
                if self.stop_step is not None and p.step >= self.stop_step:
                    return "max_steps"
                if distributed.any_rank(stop.requested is not None, self.device):
                    return "interrupted"
                if config.save_every and p.step % config.save_every == 0:
                    self.save()
        finally:
            self.display.end_epoch()
        return "finished"

    def _step(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        memory_format = (torch.channels_last if self.config.channels_last
                         else torch.contiguous_format)
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=memory_format)
        masks = masks.to(self.device, non_blocking=True)
        losses = train_step(self.forward_model, self.loss_fn, self.optimizer, self.scaler,
                            images, masks, self.precision_context)
        p = self.position
        p.batch, p.step = p.batch + 1, p.step + 1
        if self.ema is not None:
            self.ema.update(self.model, step=p.step)
        self.window.append(losses)
        if self.on_step is not None:
            self.on_step(p.step, losses)
        self.display.step()
        if p.step % self.display.every == 0:
            self._flush_window()

    def _flush_window(self) -> None:
        """Fold the steps since the last flush into the epoch sums and show them."""
        if not self.window:
            return
        now = time.perf_counter()
        seconds, count = now - self.window_start, len(self.window)
        means = {k: torch.stack([w[k] for w in self.window]).float().mean().item()
                 for k in LOSS_TERMS}
        self.window, self.window_start = [], now
        p = self.position
        if not math.isfinite(means["loss"]):
            raise TrainingDivergedError(f"the loss became {means['loss']} near step {p.step}; "
                                        "lower --lr or use --precision fp32, then resume from "
                                        "the last save or start again", self.run_dir)
        samples = count * self.config.batch_size * self.info.world_size
        for key in LOSS_TERMS:
            p.sums[key] += means[key] * count
        p.sums["steps"] += count
        p.sums["samples"] += samples
        p.sums["seconds"] += seconds
        lr = self.optimizer.param_groups[0]["lr"]
        self.display.show(f"epoch {p.epoch + 1} step {p.step}",
                          {"loss": f"{means['loss']:.4f}", "ce": f"{means['ce']:.4f}",
                           "con": f"{means['contrastive']:.4f}",
                           **({"img": f"{means['image']:.4f}"} if self.config.image_weight
                              else {}),
                           "lr": f"{lr:.2e}",
                           "samples/s": f"{samples / max(seconds, 1e-9):.1f}"})
        if self.tensorboard is not None:
            for key, value in means.items():
                self.tensorboard.add_scalar(f"train/{key}", value, p.step)
            self.tensorboard.add_scalar("train/lr", lr, p.step)

    def _end_epoch(self) -> None:
        """Schedule, validate, write checkpoints and the CSV row, print one summary line."""
        self._flush_window()
        p = self.position
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        metrics = self._validate()
        improved = metrics is not None and metrics["pixel_auc"] is not None and (
            p.best_auc is None or metrics["pixel_auc"] > p.best_auc)
        if improved:
            p.best_auc, p.best_epoch = metrics["pixel_auc"], p.epoch + 1
        row = self._csv_row(lr, metrics)
        sums = dict(p.sums)
        p.epoch, p.batch, p.sums = p.epoch + 1, 0, dict.fromkeys(EPOCH_SUMS, 0.0)
        if self.main:  # the CSV first: a rerun of this epoch end replaces its row
            self._write_csv(row)
        self.save(self._keep_epoch_weights(improved) if self.main else None)
        self.log(self._summary(sums, lr, metrics))

    def _keep_epoch_weights(self, improved: bool) -> Path | None:
        """``best.safetensors`` when validation improved and ``epoch-NNN.safetensors`` with
        ``keep_epochs`` (to be chosen later, e.g. on real forgeries): serialised once, copied."""
        from cflnet_sdk.fileio import copy_atomic
        from cflnet_sdk.training.checkpoint import save_checkpoint

        names = ["best.safetensors"] if improved else []
        if self.config.keep_epochs:
            names.append(f"epoch-{self.position.epoch:03d}.safetensors")
        if not names:
            return None
        written = save_checkpoint(self.kept_model, self.run_dir / names[0])
        for name in names[1:]:
            copy_atomic(written, self.run_dir / name)
        return written

    def _validate(self) -> dict[str, Any] | None:
        if self.val_loader is None:
            return None
        accumulator = validate(self.kept_model, self.val_loader, self.device,
                               self.precision_context)
        merged = distributed.gather(accumulator)
        for other in merged[1:]:
            merged[0].merge(other)
        self.last_val = merged[0].compute()
        if self.tensorboard is not None:
            for key in VAL_KEYS:
                if self.last_val.get(key) is not None:
                    self.tensorboard.add_scalar(f"val/{key}", self.last_val[key],
                                                self.position.step)
        return self.last_val

    def _csv_row(self, lr: float, metrics: dict[str, Any] | None) -> dict[str, Any]:
        p, steps = self.position, max(self.position.sums["steps"], 1.0)
        row: dict[str, Any] = {
            "epoch": p.epoch + 1, "step": p.step, "lr": lr,
            **{k: p.sums[k] / steps for k in LOSS_TERMS},
            "samples_per_s": p.sums["samples"] / max(p.sums["seconds"], 1e-9),
            "seconds": p.sums["seconds"]}
        for key in VAL_KEYS:
            row[f"val_{key}"] = None if metrics is None else metrics.get(key)
        return row

    def _write_csv(self, row: dict[str, Any]) -> None:
        """Rewrite metrics.csv atomically, dropping rows a killed run wrote past its state."""
        path = self.run_dir / "metrics.csv"
        rows = []
        if path.is_file():
            rows = [r for r in csv.DictReader(path.read_text().splitlines())
                    if int(r["epoch"]) < row["epoch"]]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, CSV_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows([*rows, row])
        write_bytes_atomic(path, buffer.getvalue().encode("utf-8"))

    def _summary(self, sums: dict[str, float], lr: float, metrics: dict[str, Any] | None
                 ) -> str:
        steps, p = max(sums["steps"], 1.0), self.position
        terms = f"ce {sums['ce'] / steps:.4f}, con {sums['contrastive'] / steps:.4f}"
        if self.config.image_weight:
            terms += f", img {sums['image'] / steps:.4f}"
        text = (f"epoch {p.epoch}/{self.config.epochs}  loss {sums['loss'] / steps:.4f} "
                f"({terms})  lr {lr:.2e}  "
                f"{sums['samples'] / max(sums['seconds'], 1e-9):.1f} samples/s")
        if metrics is not None:
            text += (f"  val AUC {_fmt(metrics['pixel_auc'])} (paper flip-inv "
                     f"{_fmt(metrics['pixel_auc_flip_invariant_paper'])}, pooled "
                     f"{_fmt(metrics['pooled_pixel_auc'])})  F1@0.5 {_fmt(metrics['pixel_f1'])}"
                     f"  image AUC {_fmt(metrics['image_auc'])}  best {_fmt(p.best_auc)} "
                     f"@ epoch {p.best_epoch}")
        return text


def train(config: TrainConfig, resume: bool = False, log: Log = print,
          on_step: StepHook | None = None) -> RunResult:
    """Run (or, with ``resume``, continue) training as ``config`` says; see ``docs/training.md``.

    ``on_step(step, losses)`` is called after every optimizer step with the detached losses.
    """
    try:
        return Trainer(config, resume, log, on_step).run()
    finally:
        distributed.teardown()
