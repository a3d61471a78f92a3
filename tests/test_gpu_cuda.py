"""The PyTorch CUDA backend and training on a real GPU (``pytest -m gpu``; issue 26).

A lent GPU machine has PyTorch but no TensorRT, so these are the GPU tests that can prove
something there: the torch backend on CUDA against the CPU (resize and tile mode, autocast),
the training step with AMP, and a whole ``train`` run. They skip only when CUDA is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import photo_array

pytestmark = pytest.mark.gpu
FP32_ATOL = 1e-3  # GPU against CPU in float32 (TF32 off): the kernels sum in other orders


@pytest.fixture(scope="module")
def cuda():
    """torch with a CUDA device and strict float32 math, or a skip saying what is missing."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} sees no CUDA device")
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # compare float32 with float32
    yield torch
    torch.backends.cudnn.allow_tf32 = saved


def test_torch_backend_on_cuda_matches_the_cpu(cuda, tiny_checkpoint, photo_files):
    from cflnet_sdk import Localizer

    gpu, cpu = Localizer(tiny_checkpoint, device="cuda"), Localizer(tiny_checkpoint,
                                                                    device="cpu")
    assert gpu.backend_name == "torch" and gpu.device == "cuda:0"
    for a, b in zip(gpu.predict_batch(list(photo_files.values())),
                    cpu.predict_batch(list(photo_files.values())), strict=True):
        assert a.probability.shape == b.probability.shape
        assert np.abs(a.probability - b.probability).max() <= FP32_ATOL


def test_tile_mode_on_cuda_matches_the_cpu(cuda, tile_checkpoint):
    from cflnet_sdk import Localizer

    rgb = np.ascontiguousarray(photo_array("coffee")[:333, :500])
    a = Localizer(tile_checkpoint, device="cuda").predict(rgb).probability
    b = Localizer(tile_checkpoint, device="cpu").predict(rgb).probability
    assert a.shape == (333, 500) and np.abs(a - b).max() <= FP32_ATOL


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_autocast_inference_stays_close_to_float32(cuda, tiny_checkpoint, dtype):
    from cflnet_sdk import Localizer

    if dtype == "bfloat16" and not cuda.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    loc = Localizer(tiny_checkpoint, device="cuda")
    batch = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    reference = loc.backend.run(batch)
    with cuda.autocast("cuda", dtype=getattr(cuda, dtype)):
        half = loc.backend.run(batch)
    assert half.dtype == np.float32 and np.isfinite(half).all()
    assert np.abs(half - reference).max() <= 0.05


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_train_step_with_amp_on_cuda_learns(cuda, precision):
    """The loop's own step under AMP (fp16 with its GradScaler) drives the loss down."""
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.training.losses import CFLNetLoss
    from cflnet_sdk.training.train import (
        autocast,
        build_model,
        build_optimizer,
        check_precision,
        train_step,
    )
    from cflnet_sdk.training.train_config import TrainConfig
    from tests.test_train import TINY, fixed_batch

    device = cuda.device("cuda", 0)
    try:
        check_precision(device, precision)
    except ConfigError as exc:
        pytest.skip(str(exc))
    cuda.manual_seed(0)
    config = TrainConfig(**TINY, lr=1e-3)
    model = build_model(config, resume=False).to(device)
    model.aspp.dropout.p = 0.0  # memorising one batch is the point here
    optimizer, _ = build_optimizer(model, config)
    scaler = cuda.amp.GradScaler("cuda", enabled=precision == "fp16")
    loss_fn = CFLNetLoss(1.0, config.patch_size, config.temperature)
    images, masks = (t.to(device) for t in fixed_batch())
    losses = [train_step(model, loss_fn, optimizer, scaler, images, masks,
                         lambda: autocast(device, precision))["loss"].item() for _ in range(12)]
    assert all(np.isfinite(losses)), losses
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_training_run_on_cuda_writes_a_model_that_loads(cuda, tmp_path):
    """``train`` end to end on the GPU (data, AMP, validation, checkpoints)."""
    from cflnet_sdk import Localizer
    from cflnet_sdk.training.train import train
    from cflnet_sdk.training.train_config import TrainConfig
    from tests.test_train import TINY

    config = TrainConfig(**TINY, synthetic=True, epochs=1, steps_per_epoch=2, val_samples=4,
                         workers=0, device="cuda", precision="fp16", progress=False,
                         out=str(tmp_path / "run"))
    train(config, log=lambda _: None)
    loc = Localizer(tmp_path / "run" / "last.safetensors", device="cuda")
    probability = loc.predict(np.zeros((64, 64, 3), np.uint8)).probability
    assert probability.shape == (64, 64) and np.isfinite(probability).all()
