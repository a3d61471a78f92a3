"""Forgery data: synthetic generator, dataset readers and augmentations (torch-free).

The torch ``Dataset`` wrapper lives in ``cflnet_sdk.training.data.torch_dataset`` and is the
only module here that imports torch, so generation runs cheaply inside DataLoader workers.
"""

from cflnet_sdk.training.data.augment import AugmentConfig, augment
from cflnet_sdk.training.data.readers import (
    READERS,
    DataReport,
    ForgeryDataset,
    Problem,
    Record,
    check_dataset,
    open_dataset,
    read_mask,
)
from cflnet_sdk.training.data.synth import (
    Sample,
    SynthConfig,
    SynthDataset,
    generate,
    generate_sample,
)

__all__ = [
    "READERS",
    "AugmentConfig",
    "DataReport",
    "ForgeryDataset",
    "Problem",
    "Record",
    "Sample",
    "SynthConfig",
    "SynthDataset",
    "augment",
    "check_dataset",
    "generate",
    "generate_sample",
    "open_dataset",
    "read_mask",
]
