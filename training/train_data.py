"""Data for the training loop: datasets from a config, a resumable epoch sampler, loaders.

The sampler owns the data order (seeded by ``seed + epoch``, sharded by rank) and can start
an epoch at any batch, which is what makes ``--resume`` continue with exactly the next batch.
The streaming synthetic set gives every epoch fresh samples by index (``epoch * block + i``),
so persistent DataLoader workers never need to be told the epoch.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from cflnet_sdk.errors import DataError
from cflnet_sdk.training.data.torch_dataset import ForgeryTorchDataset, PairSource
from cflnet_sdk.training.train_config import TrainConfig

VAL_SEED_OFFSET = 1_000_003  # the synthetic validation set: same recipe, other samples


class EpochSampler(Sampler[int]):
    """This rank's sample indices for one epoch, from batch ``start_batch`` on.

    ``stream``: ``size`` fresh indices per epoch (``epoch * size + i``), else a permutation of
    ``range(size)`` seeded by ``seed + epoch`` (``shuffle``) or the identity. ``drop_last``
    keeps a multiple of ``batch_size * world`` so every rank gets the same full batches.
    """

    def __init__(self, size: int, batch_size: int, *, seed: int = 0, shuffle: bool = False,
                 drop_last: bool = False, stream: bool = False, rank: int = 0,
                 world: int = 1) -> None:
        self.size, self.batch_size = size, batch_size
        self.seed, self.shuffle, self.drop_last, self.stream = seed, shuffle, drop_last, stream
        self.rank, self.world = rank, world
        self.epoch = self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def epoch_indices(self) -> list[int]:
        """All of this rank's indices of the current epoch (ignoring ``start_batch``)."""
        if self.stream:
            indices = list(range(self.epoch * self.size, (self.epoch + 1) * self.size))
        elif self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.size, generator=generator).tolist()
        else:
            indices = list(range(self.size))
        if self.drop_last:
            step = self.batch_size * self.world
            indices = indices[:len(indices) // step * step]
        return indices[self.rank::self.world]

    def batches_per_epoch(self) -> int:
        count = len(self.epoch_indices())
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices()[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return max(0, len(self.epoch_indices()) - self.start_batch * self.batch_size)


@dataclass
class DataSources:
    """What the loop trains and validates on."""

    train: PairSource
    val: PairSource | None
    stream: bool  # train is indexed epoch * block + i
    block: int  # samples per epoch over all ranks (stream only)
    description: str


def synthetic_sources(config: TrainConfig, world: int) -> DataSources:
    """Fresh synthetic forgeries of the training photos; validation from held-out photos.

    A tile-mode model learns from native crops (``synth.NATIVE_RECIPE``); ``synth_save_jpeg``
    changes how many samples end as JPEG files, as the images a deployment meets may;
    ``synth_pristine`` how many are left unedited; ``synth_jpeg_quality`` the qualities of
    every compression.
    """
    from dataclasses import replace

    from cflnet_sdk.training.data.synth import NATIVE_RECIPE, SynthConfig, SynthDataset

    block = config.steps_per_epoch * config.batch_size * world
    native = config.mode == "tile"
    settings = dict(NATIVE_RECIPE if native else {})
    for key, setting in (("save_jpeg_rate", config.synth_save_jpeg),
                         ("pristine_rate", config.synth_pristine),
                         ("jpeg_quality", config.synth_jpeg_quality)):
        if setting is not None:
            settings[key] = setting
    recipe = SynthConfig(seed=config.seed, height=config.size, width=config.size,
                         kinds=tuple(config.synth_kinds), sources=tuple(config.sources),
                         split="train", exclude=tuple(config.exclude_photos), **settings)
    held_out = replace(recipe, seed=config.seed + VAL_SEED_OFFSET, split="held-out")
    val = SynthDataset(held_out, length=config.val_samples) if config.val_samples else None
    photos = ", ".join(config.sources) or "packaged photos"
    if config.exclude_photos:
        photos += f" less {len(config.exclude_photos)} listed photos"
    return DataSources(SynthDataset(recipe, length=config.epochs * block), val, True, block,
                       f"synthetic {'+'.join(config.synth_kinds)} from {photos} "
                       f"({'native crops' if native else 'rescaled views'}): {block} fresh "
                       f"samples per epoch (seed {config.seed}, training photos), "
                       f"{config.val_samples} validation samples (seed "
                       f"{config.seed + VAL_SEED_OFFSET}, held-out photos)")


def dataset_sources(config: TrainConfig, log: Callable[[str], None]) -> DataSources:
    from cflnet_sdk.training.data.readers import ForgeryDataset, open_dataset

    def read(path: str) -> ForgeryDataset:
        dataset = open_dataset(path, format=config.data_format, on_error="skip")
        if dataset.problems:
            log(f"{path}: skipped {len(dataset.problems)} unusable pair(s), first: "
                f"{dataset.problems[0]} (see `cflnet data check {path}`)")
        return dataset

    train = read(config.data or "")
    if config.val:
        val: ForgeryDataset | None = read(config.val)
        how = f"validation {config.val}"
    elif config.val_fraction > 0:
        train, val = train.split((1.0 - config.val_fraction, config.val_fraction), config.seed)
        how = f"seeded {config.val_fraction:.0%} validation split (seed {config.seed})"
    else:
        val, how = None, "no validation (best.safetensors is not written)"
    return DataSources(train, val, False, 0,
                       f"{config.data}: {len(train)} training images, "
                       f"{len(val) if val else 0} validation images ({how})")


def _ignore_sigint(_: int) -> None:
    """Workers leave Ctrl-C to the main process, which saves the run and stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_loader(source: PairSource, sampler: EpochSampler, config: TrainConfig,
                device: torch.device, train: bool) -> DataLoader:
    """A DataLoader whose order is the sampler's; its own generator keeps the global RNG intact."""
    workers = config.workers
    dataset = ForgeryTorchDataset(source, config.contract(), seed=config.seed)
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                      num_workers=workers, pin_memory=device.type == "cuda",
                      drop_last=train, persistent_workers=workers > 0,
                      worker_init_fn=_ignore_sigint if workers else None,
                      generator=torch.Generator().manual_seed(config.seed),
                      prefetch_factor=4 if workers else None)


def check_size(sampler: EpochSampler, size: int, config: TrainConfig, world: int) -> None:
    if sampler.batches_per_epoch() < 1:
        raise DataError(f"{size} training images are fewer than one batch of "
                        f"{config.batch_size} x {world} process(es); lower --batch-size or add "
                        "data")
