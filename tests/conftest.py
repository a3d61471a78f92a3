"""Shared fixtures: a small real CFL-Net checkpoint and real photo files.

Tests use a ResNet-18 CFL-Net with narrow ASPP so the suite runs on a 2-core CPU; the full
ResNet-50 network is exercised where the paper's numbers matter (parameter count, layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def photo_array(name: str = "astronaut") -> np.ndarray:
    """A natural photo shipped with scikit-image, as HxWx3 uint8 RGB."""
    from skimage import data

    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def noise_photos(folder: Path, count: int, shape: tuple[int, int] = (80, 80), quality: int = 85,
                 seed: int = 0) -> list[Path]:
    """``count`` JPEGs of random noise in a new folder: photo sources for the generator."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    paths = [folder / f"p{i:03d}.jpg" for i in range(count)]
    for path in paths:
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path,
                                                                               quality=quality)
    return paths


@pytest.fixture(scope="session")
def torch_threads():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    return torch


@pytest.fixture(scope="session")
def tiny_config():
    from cflnet_sdk.training.config import CFLNetConfig

    return CFLNetConfig(backbone="resnet18", aspp_channels=64, embedding_dim=32)


@pytest.fixture(scope="session")
def tiny_model(torch_threads, tiny_config):
    """A randomly initialised small CFL-Net in eval mode, with BN statistics made non-trivial."""
    from cflnet_sdk.training.model import CFLNet

    torch = torch_threads
    torch.manual_seed(0)
    model = CFLNet(tiny_config)
    model.train()
    with torch.no_grad():  # a few forward passes give BN running stats that are not 0/1
        for _ in range(3):
            model(torch.randn(2, 3, 64, 64))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_model, tmp_path_factory) -> Path:
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.training.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    return save_checkpoint(tiny_model, path, contract=Contract(height=64, width=64))


@pytest.fixture(scope="session")
def photo_files(tmp_path_factory) -> dict[str, Path]:
    """Real image files on disk: a JPEG, a PNG and a grayscale PNG."""
    folder = tmp_path_factory.mktemp("photos")
    files = {
        "jpeg": folder / "astronaut.jpg",
        "png": folder / "chelsea.png",
        "gray": folder / "camera.png",
    }
    Image.fromarray(photo_array("astronaut")).save(files["jpeg"], quality=92)
    Image.fromarray(photo_array("chelsea")).save(files["png"])
    Image.fromarray(photo_array("camera")[..., 0]).save(files["gray"])
    return files


@pytest.fixture(scope="session")
def tile_model(torch_threads):
    """A very small CFL-Net (timm's ``test_resnet`` trunks) with a 128x128 tile-mode contract,
    cheap enough to run every tile of a 6-megapixel photo in a test."""
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.training.config import CFLNetConfig
    from cflnet_sdk.training.model import CFLNet

    torch = torch_threads
    torch.manual_seed(0)
    model = CFLNet(CFLNetConfig(backbone="test_resnet", aspp_channels=16, embedding_dim=8))
    model.train()
    with torch.no_grad():  # BN running statistics that are not 0/1
        for _ in range(3):
            model(torch.randn(2, 3, 128, 128))
    model.contract = Contract(height=128, width=128, mode="tile", tile_overlap=32)
    return model.eval()


@pytest.fixture(scope="session")
def tile_checkpoint(tile_model, tmp_path_factory) -> Path:
    from cflnet_sdk.training.checkpoint import save_checkpoint

    return save_checkpoint(tile_model, tmp_path_factory.mktemp("tile") / "tile.safetensors")


@pytest.fixture(scope="session")
def tile_onnx(tile_checkpoint, tmp_path_factory) -> Path:
    from cflnet_sdk.export.onnx import export_onnx

    return export_onnx(tile_checkpoint, tmp_path_factory.mktemp("tile-onnx") / "tile.onnx")


def error_level_checkpoint(folder: Path, srm: bool) -> Path:
    """A small tile-mode CFL-Net with one error-level input channel (JPEG quality 90), beside
    the SRM residuals or (``srm=False``) alone in the second stream."""
    import torch

    from cflnet_sdk.contract import Contract
    from cflnet_sdk.training.checkpoint import save_checkpoint
    from cflnet_sdk.training.config import CFLNetConfig
    from cflnet_sdk.training.model import CFLNet

    torch.manual_seed(1)
    model = CFLNet(CFLNetConfig(backbone="test_resnet", srm=srm, aspp_channels=16,
                                embedding_dim=8, extra_channels=1)).eval()
    contract = Contract(height=128, width=128, mode="tile", ela_qualities=(90,))
    return save_checkpoint(model, folder / "ela.safetensors", contract=contract)


@pytest.fixture(scope="session")
def ela_checkpoint(torch_threads, tmp_path_factory) -> Path:
    return error_level_checkpoint(tmp_path_factory.mktemp("ela"), srm=True)
