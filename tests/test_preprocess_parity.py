"""Training and runtime turn the same file into bit-identical model inputs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from cflnet_sdk import Localizer
from cflnet_sdk.training.data.readers import ForgeryDataset, Record
from cflnet_sdk.training.data.torch_dataset import ForgeryTorchDataset


@pytest.mark.parametrize("kind", ["jpeg", "png", "gray"])
def test_training_and_runtime_preprocessing_are_identical(tiny_checkpoint, photo_files, kind):
    localizer = Localizer(tiny_checkpoint)
    records = [Record(image=photo_files[kind], mask=None)]
    dataset = ForgeryTorchDataset(ForgeryDataset(records), contract=localizer.contract)
    image, mask = dataset[0]
    runtime = localizer.prepare(photo_files[kind]).inputs.input(0)
    assert runtime.dtype == np.float32
    assert np.array_equal(image.numpy(), runtime)
    assert mask.shape == localizer.contract.size and not mask.any()
