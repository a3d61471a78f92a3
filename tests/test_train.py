"""Training: the step learns, the recipe's defaults, config precedence, the CLI end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cflnet_sdk.errors import ConfigError  # noqa: E402
from cflnet_sdk.training.train_config import TrainConfig, resolve  # noqa: E402
from tests.conftest import noise_photos  # noqa: E402

TINY = {"backbone": "resnet18", "aspp_channels": 32, "embedding_dim": 16, "size": 64,
        "batch_size": 2}


def tiny_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on 2 shared cores, two threads each wait on the other (3x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def fixed_batch(count: int = 2, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Real synthetic forgeries (tampered regions of every image), preprocessed as in training."""
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.training.data.synth import SynthConfig, SynthDataset
    from cflnet_sdk.training.data.torch_dataset import ForgeryTorchDataset

    source = SynthDataset(SynthConfig(seed=5, height=size, width=size, pristine_rate=0.0,
                                      post_rate=0.0, kinds=("splice",)), length=count)
    dataset = ForgeryTorchDataset(source, Contract(height=size, width=size))
    images, masks = zip(*(dataset[i] for i in range(count)), strict=True)
    return torch.stack(images), torch.stack(masks)


def test_paper_recipe_defaults():
    config = TrainConfig()
    assert (config.lr, config.weight_decay, config.lr_step_epochs, config.lr_gamma) == (
        1e-4, 0.0, 20, 0.8)
    assert (config.epochs, config.batch_size, config.size, config.seed) == (100, 4, 256, 1221)
    assert config.class_weights == (0.0892, 0.9108)
    assert (config.contrastive_weight, config.patch_size, config.temperature) == (1.0, 4, 0.1)
    assert config.image_weight == 0.0  # the image-score loss is ours, off in the paper's recipe
    assert (config.backbone, config.aspp_channels, config.embedding_dim) == ("resnet50", 512, 256)


def test_flags_win_over_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.0005\nepochs: 7\nbatch-size: 8\nsynth_kinds: [splice, removal]\n")
    config = resolve(path, {"epochs": 3, "lr": None, "synthetic": True})
    assert (config.lr, config.epochs, config.batch_size) == (0.0005, 3, 8)
    assert config.synth_kinds == ("splice", "removal")
    again = resolve(None, dict(TrainConfig(**TINY).to_dict()))  # a dumped config reads back
    assert again == TrainConfig(**TINY)


@pytest.mark.parametrize("bad, words", [
    ({"batch_size": 1}, "batch_size 1"), ({"size": 100}, "multiple of 32"),
    ({"precision": "fp8"}, "precision"), ({"synthetic": True, "data": "x"}, "not both"),
    ({"ema_decay": 1.0}, "ema_decay 1.0 must be in"),
    ({"synth_save_jpeg": 1.5}, "synth_save_jpeg 1.5 must be in"),
    ({"synth_pristine": 1.0}, "synth_pristine 1.0 must be in"),
    ({"synth_jpeg_quality": (90, 50)}, "synth_jpeg_quality"),
    ({"image_weight": -1.0}, "image_weight >= 0")])
def test_invalid_settings_say_what_to_do(bad, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig(**bad)


@pytest.mark.parametrize("share, saved", [(None, None), (1.0, 6), (0.0, 0)])
def test_synth_save_jpeg_sets_how_many_samples_end_as_jpeg(share, saved):
    """``--synth-save-jpeg``: the share of training and validation samples saved as JPEG at
    the end; unset, the tile-mode recipe's."""
    from cflnet_sdk.training.data.synth import NATIVE_RECIPE
    from cflnet_sdk.training.train_data import synthetic_sources

    config = TrainConfig(synthetic=True, mode="tile", size=64, batch_size=2, steps_per_epoch=3,
                         epochs=1, val_samples=6, synth_save_jpeg=share)
    sources = synthetic_sources(config, world=1)
    expected = NATIVE_RECIPE["save_jpeg_rate"] if share is None else share
    assert sources.train.config.save_jpeg_rate == sources.val.config.save_jpeg_rate == expected
    finals = [any(step["op"] == "save-jpeg" for step in sample.params.get("post", []))
              for sample in sources.train]
    if saved is not None:
        assert sum(finals) == saved == len(finals) * share


def test_synth_pristine_and_jpeg_quality_reach_the_generator():
    """``--synth-pristine`` and ``--synth-jpeg-quality``: how many samples stay unedited and the
    qualities of every compression, for training and validation alike."""
    from cflnet_sdk.training.train_data import synthetic_sources

    config = TrainConfig(synthetic=True, mode="tile", size=64, batch_size=2, steps_per_epoch=10,
                         epochs=1, val_samples=4, synth_pristine=0.5,
                         synth_jpeg_quality=(97, 99))
    sources = synthetic_sources(config, world=1)
    for recipe in (sources.train.config, sources.val.config):
        assert (recipe.pristine_rate, recipe.jpeg_quality) == (0.5, (97, 99))
    samples = list(sources.train)
    assert 5 <= sum(s.mask is None for s in samples) <= 15  # about half of 20
    qualities = [q for s in samples for q in (s.params.get("host_jpeg"),) if q is not None]
    assert qualities and all(97 <= q <= 99 for q in qualities)


def test_unknown_setting_in_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown training setting 'learning_rate'"):
        resolve(path, {})


def test_fp16_needs_cuda():
    from cflnet_sdk.training.train import check_precision

    with pytest.raises(ConfigError, match="bf16 on the CPU"):
        check_precision(torch.device("cpu"), "fp16")


def test_optimizer_holds_trainable_parameters_only(torch_threads):
    from cflnet_sdk.training.train import build_model, build_optimizer

    for weight in (1.0, 0.0):
        config = TrainConfig(**TINY, contrastive_weight=weight)
        model = build_model(config, resume=False)
        optimizer, scheduler = build_optimizer(model, config)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert id(model.conv_srm.weight) not in held  # the fixed SRM kernels
        projection = {id(p) for p in model.projection.parameters()}
        assert (projection <= held) == (weight > 0)  # CE-only: the head gets no gradient
        assert optimizer.param_groups[0]["weight_decay"] == 0.0
        assert (scheduler.step_size, scheduler.gamma) == (20, 0.8)


def test_sampler_order_is_seeded_sharded_and_resumable():
    from cflnet_sdk.training.train_data import EpochSampler

    def sampler(rank: int, **kw) -> EpochSampler:
        return EpochSampler(10, 2, seed=3, shuffle=True, drop_last=True, rank=rank, world=2,
                            **kw)

    a, b = sampler(0), sampler(1)
    first, second = a.epoch_indices(), b.epoch_indices()
    assert len(first) == len(second) == 4 and not set(first) & set(second)
    a.set_epoch(1)
    assert a.epoch_indices() != first  # another order each epoch
    a.set_epoch(0, start_batch=1)
    assert list(a) == first[2:] and len(a) == 2 and a.batches_per_epoch() == 2
    stream = EpochSampler(6, 2, stream=True)
    stream.set_epoch(2)
    assert list(stream) == [12, 13, 14, 15, 16, 17]


def test_a_small_model_overfits_a_fixed_batch(torch_threads):
    """The loop's own step (forward, CE + contrastive, Adam) drives the loss down quickly.

    At 64x64 a ResNet-18 trunk sees a 2x2 grid, so the patch embeddings are smooth
    interpolations and the contrastive term levels off well above 0; CE keeps falling.
    """
    from cflnet_sdk.training.losses import CFLNetLoss
    from cflnet_sdk.training.train import autocast, build_model, build_optimizer, train_step

    torch.manual_seed(0)
    config = TrainConfig(**TINY, lr=1e-3)
    model = build_model(config, resume=False)
    model.aspp.dropout.p = 0.0  # memorising one batch is the point here
    optimizer, _ = build_optimizer(model, config)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    loss_fn = CFLNetLoss(1.0, config.patch_size, config.temperature)
    images, masks = fixed_batch()
    steps = [train_step(model, loss_fn, optimizer, scaler, images, masks,
                        lambda: autocast(torch.device("cpu"), "fp32")) for _ in range(20)]
    losses, ce = ([s[key].item() for s in steps] for key in ("loss", "ce"))
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses
    assert np.mean(ce[-3:]) < 0.5 * ce[0], ce


def test_cli_train_writes_a_usable_run(tmp_path, photo_files):
    """A real ``cflnet train`` subprocess: config from file + flags, every run file, a model
    that ``Localizer`` loads."""
    config = tmp_path / "train.yaml"
    config.write_text("backbone: resnet18\naspp_channels: 32\nembedding_dim: 16\nlr: 0.0003\n"
                      "epochs: 5\n")
    run = tmp_path / "run"
    command = [sys.executable, "-m", "cflnet_sdk", "train", "--config", str(config),
               "--synthetic", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
               "--size", "64", "--val-samples", "4", "--workers", "1", "--device", "cpu",
               "--save-every", "1", "--keep-epochs", "--out", str(run)]
    done = subprocess.run(command, capture_output=True, text=True, env=tiny_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch 1/1" in done.stdout and "val AUC" in done.stdout
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.csv", "last.safetensors", "best.safetensors",
            "epoch-001.safetensors", "state.safetensors", "state.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    resolved = resolve(run / "config.yaml", {})
    assert (resolved.lr, resolved.epochs, resolved.backbone) == (0.0003, 1, "resnet18")
    from cflnet_sdk.training.checkpoint import read_checkpoint

    kept, last = (read_checkpoint(run / name)[0] for name in ("epoch-001.safetensors",
                                                               "last.safetensors"))
    assert kept.keys() == last.keys() and all(torch.equal(kept[k], last[k]) for k in kept)
    assert (run / "best.safetensors").read_bytes() == (run / "last.safetensors").read_bytes()
    assert json.loads((run / "state.json").read_text())["epoch"] == 1  # saved at the epoch end
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].startswith("epoch,step,lr,loss,ce,contrastive")

    from cflnet_sdk import Localizer

    prediction = Localizer(run / "best.safetensors", device="cpu").predict(photo_files["jpeg"])
    assert prediction.probability.shape == (512, 512)
    assert 0.0 <= prediction.score <= 1.0


def test_init_fine_tunes_a_checkpoint_with_its_own_architecture(tmp_path):
    """``--init``: the file's network, size and mode are used, its weights are the start, and a
    flag contradicting its architecture is refused."""
    from cflnet_sdk.training.checkpoint import save_checkpoint
    from cflnet_sdk.training.train import build_model

    source = build_model(TrainConfig(**TINY, mode="tile", ela_qualities=(90,)), resume=False)
    path = save_checkpoint(source, tmp_path / "start.safetensors", half=True)
    config = resolve(None, {"init": str(path), "batch_size": 2, "lr": 1e-5})
    assert (config.backbone, config.aspp_channels, config.embedding_dim, config.size,
            config.mode, config.ela_qualities) == ("resnet18", 32, 16, 64, "tile", (90,))
    started = build_model(config, resume=False).state_dict()
    for key, value in source.state_dict().items():
        expected = value.half().to(value.dtype) if value.is_floating_point() else value
        assert torch.equal(started[key], expected), key
    assert resolve(None, {"init": str(path), "size": 128}).size == 128  # input may change
    with pytest.raises(ConfigError, match="aspp_channels 64"):
        resolve(None, {"init": str(path), "aspp_channels": 64})
    with pytest.raises(ConfigError, match="not both"):
        resolve(None, {"init": str(path), "pretrained_backbone": str(path)})


def test_cli_fine_tunes_the_default_model(tmp_path):
    """``cflnet train --init default``: the shipped network, trained on at another tile size."""
    from cflnet_sdk.default_model import DEFAULT_CHECKPOINT
    from cflnet_sdk.training.checkpoint import read_checkpoint

    run = tmp_path / "tuned"
    done = subprocess.run([sys.executable, "-m", "cflnet_sdk", "train", "--init", "default",
                           "--synthetic", "--size", "64", "--epochs", "1", "--steps-per-epoch",
                           "1", "--batch-size", "2", "--val-samples", "2", "--workers", "0",
                           "--device", "cpu", "--out", str(run)],
                          capture_output=True, text=True, env=tiny_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"fine-tuning {DEFAULT_CHECKPOINT}" in done.stdout
    _, shipped, shipped_contract = read_checkpoint(DEFAULT_CHECKPOINT)
    _, tuned, contract = read_checkpoint(run / "last.safetensors")
    assert tuned == shipped
    assert (contract.mode, contract.channels, contract.height) == (
        shipped_contract.mode, shipped_contract.channels, 64)
    width = shipped.aspp_channels
    refused = subprocess.run([sys.executable, "-m", "cflnet_sdk", "train", "--init", "default",
                              "--aspp-channels", str(width * 2), "--synthetic", "--out",
                              str(tmp_path / "x")],
                             capture_output=True, text=True, env=tiny_env(), timeout=120)
    assert refused.returncode == 2
    assert f"aspp_channels {width * 2} (the file's: {width})" in refused.stderr


def test_cli_refuses_batch_size_one(tmp_path):
    done = subprocess.run([sys.executable, "-m", "cflnet_sdk", "train", "--synthetic",
                           "--batch-size", "1", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=tiny_env(), timeout=120)
    assert done.returncode == 2
    assert "batch_size 1" in done.stderr and "use 2 or more" in done.stderr
    assert not (tmp_path / "r").exists()


def test_cli_train_tile_mode_with_error_levels_writes_that_contract(tmp_path):
    """``--mode tile --ela 90``: native synthetic crops, a 4-channel network, and checkpoints
    whose contract says so, which Localizer runs."""
    photos = tmp_path / "photos"
    noise_photos(photos, 12, shape=(90, 120))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "cflnet_sdk", "train", "--synthetic", "--sources",
               str(photos), "--mode", "tile", "--ela", "90", "--backbone", "resnet18",
               "--aspp-channels", "16", "--embedding-dim", "8", "--size", "64", "--epochs", "1",
               "--steps-per-epoch", "2", "--batch-size", "2", "--val-samples", "2",
               "--synth-save-jpeg", "0.8", "--synth-pristine", "0.3",
               "--synth-jpeg-quality", "70-90", "--workers", "0", "--device", "cpu",
               "--out", str(run)]
    kept_out = sorted(photos.iterdir())[:3]
    listed = tmp_path / "validation-photos.txt"
    listed.write_text("# kept for validation\n" + "".join(f"photos/{p.name}\n" for p in kept_out))
    done = subprocess.run([*command, "--exclude-photos", str(listed)], capture_output=True,
                          text=True, env=tiny_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "native crops" in done.stdout and "held-out photos" in done.stdout
    assert "less 3 listed photos" in done.stdout
    saved = (run / "config.yaml").read_text()  # a resumed run keeps these
    assert all(f"- photos/{p.name}" in saved for p in kept_out)
    assert "synth_save_jpeg: 0.8" in saved and "synth_pristine: 0.3" in saved
    assert "synth_jpeg_quality:\n- 70\n- 90" in saved
    from cflnet_sdk.training.checkpoint import read_checkpoint

    tensors, config, contract = read_checkpoint(run / "last.safetensors")
    assert (contract.mode, contract.ela_qualities, contract.channels) == ("tile", (90,), 4)
    assert config.extra_channels == 1
    assert tensors["encoder_srm.conv1.weight"].shape[1] == 4

    from cflnet_sdk import Localizer

    prediction = Localizer(run / "last.safetensors", device="cpu").predict(
        np.random.default_rng(0).integers(0, 255, (70, 100, 3), dtype=np.uint8))
    assert prediction.probability.shape == (70, 100)
    bad = subprocess.run([*command[:9], "--ela", "ninety", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env={**tiny_env(), "COLUMNS": "200"},
                         timeout=120)
    assert bad.returncode == 2 and "JPEG qualities" in bad.stderr
