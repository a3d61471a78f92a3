"""CFL-Net (Niloy et al., WACV 2023): RGB and SRM-noise ResNet streams, ASPP, two heads.

Module names follow the authors' code, so their released ``state_dict`` loads with
``strict=True``: ``encoder``, ``conv_srm``, ``encoder_srm``, ``aspp``, ``decoder``, ``projection``.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import ConfigError, ModelFileError
from cflnet_sdk.training.aspp import ASPP
from cflnet_sdk.training.config import CFLNetConfig
from cflnet_sdk.training.srm import srm_conv

OUTPUT_STRIDE = 8


def create_trunk(name: str, in_chans: int = 3) -> nn.Module:
    """A timm backbone returning only its last stage (stride 32), never downloading weights."""
    try:
        return timm.create_model(name, pretrained=False, features_only=True, out_indices=[4],
                                 in_chans=in_chans)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ConfigError(f"backbone {name!r} is not a timm model usable with features_only "
                          f"(e.g. resnet50, resnet18, mobilenetv3_large_100): {exc}") from exc


class CFLNet(nn.Module):
    """The full training network. ``forward`` returns ``(logits, embeddings)`` at stride 8."""

    def __init__(self, config: CFLNetConfig | None = None):
        super().__init__()
        self.config = config = config or CFLNetConfig()
        self.contract = Contract()  # preprocessing this model expects; set by load_checkpoint
        self.encoder = create_trunk(config.backbone)
        channels = self.encoder.feature_info.channels()[-1]
        if config.srm:
            self.conv_srm = srm_conv()
        if config.noise_channels:
            self.encoder_srm = create_trunk(config.backbone, config.noise_channels)
            channels *= 2
        width = config.aspp_channels
        self.aspp = ASPP(channels, width, config.aspp_rates, config.dropout)
        self.decoder = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.Conv2d(width, config.num_classes, 1),
        )
        self.projection = nn.Sequential(
            nn.Conv2d(width, width, 1),
            nn.BatchNorm2d(width),
            nn.Conv2d(width, config.embedding_dim, 1),
        )
        if config.pretrained_backbone:
            load_backbone_weights(self.encoder, config.pretrained_backbone)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Fused ASPP features upsampled x4, i.e. at stride 8.

        ``x`` holds R, G, B and then ``config.extra_channels`` channels for the noise stream.
        """
        rgb = x[:, :3] if self.config.extra_channels else x
        features = self.encoder(rgb)[-1]
        if self.config.noise_channels:
            streams = [self.conv_srm(rgb)] if self.config.srm else []
            if self.config.extra_channels:
                streams.append(x[:, 3:])
            noise = torch.cat(streams, dim=1) if len(streams) > 1 else streams[0]
            features = torch.cat([features, self.encoder_srm(noise)[-1]], dim=1)
        features = self.aspp(features)
        return F.interpolate(features, scale_factor=4, mode="bilinear", align_corners=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.features(x)
        return self.decoder(features), self.projection(features)

    def tamper_probability(self, x: torch.Tensor) -> torch.Tensor:
        """Tampered-class probability at the input size, shape (B, 1, H, W): the inference output.

        Equals softmax over the bilinearly upsampled logits, channel 1; for two classes it is
        computed as sigmoid of the upsampled logit difference, which is exact and half the work.
        """
        logits = self.decoder(self.features(x))
        if logits.shape[1] == 2:
            margin = logits[:, 1:2] - logits[:, 0:1]
            margin = F.interpolate(margin, size=x.shape[2:], mode="bilinear", align_corners=True)
            return torch.sigmoid(margin)
        logits = F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)
        return logits.softmax(dim=1)[:, 1:2]


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.safetensors`` file or a ``.pth`` loaded with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("no such weights file", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any decoder error means: not a usable weights file
        raise ModelFileError(
            f"cannot read weights ({type(exc).__name__}: {str(exc)[:300]}); only safetensors "
            "files and plain tensor state_dicts are accepted, never pickled code", path) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError("the file holds no state_dict of tensors", path)
    return state


def load_backbone_weights(trunk: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights (timm or torchvision naming) into a features-only trunk."""
    state = {k.removeprefix("module."): v for k, v in read_state_dict(path).items()}
    own = trunk.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(usable))
    if missing:
        raise ModelFileError(f"{len(missing)} backbone tensors missing or of another shape "
                             f"(first: {missing[:5]}); is this the right backbone's file?", path)
    trunk.load_state_dict(usable, strict=True)


class CFLNetInference(nn.Module):
    """The deployable network: RGB and SRM streams, ASPP and segmentation head, no projection.

    Input: (B, C, H, W) normalised by the contract (C = 3 + extra channels). Output:
    (B, 1, H, W) tampered-class probability at the input size, so every exported backend
    returns the same thing.
    """

    def __init__(self, model: CFLNet):
        super().__init__()
        self.config = model.config
        self.contract = model.contract
        self.encoder = model.encoder
        if model.config.srm:
            self.conv_srm = model.conv_srm
        if model.config.noise_channels:
            self.encoder_srm = model.encoder_srm
        self.aspp = model.aspp
        self.decoder = model.decoder

    features = CFLNet.features
    tamper_probability = CFLNet.tamper_probability

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tamper_probability(x)
