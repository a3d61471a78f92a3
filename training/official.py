"""Import the authors' released checkpoint (a plain ``torch.save(model.state_dict())``)."""

from __future__ import annotations

from pathlib import Path

from cflnet_sdk.contract import Contract
from cflnet_sdk.training.checkpoint import load_weights, save_checkpoint
from cflnet_sdk.training.config import CFLNetConfig
from cflnet_sdk.training.model import CFLNet, read_state_dict


def import_official_checkpoint(source: str | Path, output: str | Path, size: int = 224) -> Path:
    """Convert the authors' ``.pth`` into a checkpoint that records their preprocessing.

    The file is read with ``torch.load(weights_only=True)``: a pickle that tries to run code
    is refused. Their contract is BGR pixels, ImageNet mean/std and OpenCV bilinear resize.
    """
    state = {k.removeprefix("module."): v for k, v in read_state_dict(source).items()}
    model = CFLNet(CFLNetConfig())
    load_weights(model, state, source)
    return save_checkpoint(model, output, contract=Contract.authors(size))
