"""A thin torch ``Dataset`` over any record source: the only torch-aware file of the data code.

Images decode with ``cflnet_sdk.images.load_image`` and become tensors through the contract:
resized whole (``Contract.preprocess``/``Contract.resize_mask``) for a resize-mode model, or, for
a tile-mode model, a random crop of the contract size from ``Contract.input_pixels`` of the
whole image, on the 8x8 grid the runtime's tiles use. The exact functions the runtime uses, so
a model never trains on pixels prepared differently from the ones it will see in deployment.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from cflnet_sdk.contract import Contract
from cflnet_sdk.images import load_image
from cflnet_sdk.training.data.augment import AugmentConfig, augment
from cflnet_sdk.training.data.sources import aligned_corner, crop_or_pad

TILE_ALIGN = 8  # tiles start on the 8x8 JPEG grid, in training as at run time


class PairSource(Protocol):
    """``ForgeryDataset`` and ``SynthDataset`` both fit: a length and ``load(i) -> (rgb, mask)``."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...


class ForgeryTorchDataset(Dataset):
    """``(image float32 3xHxW normalised, mask float32 HxW in {0, 1})`` pairs at contract size.

    Augmentation and tile crops draw from ``SeedSequence(seed, spawn_key=(epoch, index))``:
    reproducible, and different each epoch once ``set_epoch`` is called.
    """

    def __init__(self, source: PairSource, contract: Contract | None = None,
                 augment_config: AugmentConfig | None = None, seed: int = 1221) -> None:
        self.source = source
        self.contract = contract or Contract()
        self.augment_config = augment_config or AugmentConfig()
        self.seed, self.epoch = seed, 0

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, mask = self.source.load(index)
        rgb = load_image(rgb)  # arrays from a synthetic source get the same normalisation
        rng = np.random.default_rng(np.random.SeedSequence(self.seed,
                                                           spawn_key=(self.epoch, index)))
        if self.augment_config.enabled:
            rgb, mask = augment(rgb, mask, rng, self.augment_config)
        contract = self.contract
        if contract.mode == "tile":
            corner = aligned_corner(rng, rgb.shape, *contract.size, TILE_ALIGN)
            pixels = crop_or_pad(contract.input_pixels(rgb), *corner, *contract.size)
            image, mask = contract.normalize(pixels), crop_or_pad(mask, *corner, *contract.size)
        else:
            image, mask = contract.preprocess(rgb), contract.resize_mask(mask)
        return torch.from_numpy(image), torch.from_numpy(mask.astype(np.float32))
