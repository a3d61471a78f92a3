"""Model configuration: everything needed to rebuild a CFL-Net, stored inside each checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any

from cflnet_sdk.errors import ConfigError


@dataclass(frozen=True)
class CFLNetConfig:
    """Architecture of a CFL-Net. The defaults are the paper's ResNet-50 network.

    ``pretrained_backbone`` is a local timm/torchvision state dict for the RGB trunk (never a
    download); it only matters when a model is first built and is not saved in checkpoints.
    ``extra_channels`` (ours, not the paper's) are input channels after R, G, B, such as the
    contract's error levels; they join the SRM residuals as input of the noise stream, or are
    its only input when ``srm`` is off.
    """

    backbone: str = "resnet50"
    srm: bool = True
    aspp_channels: int = 512
    aspp_rates: tuple[int, ...] = (1, 6, 12, 18)
    num_classes: int = 2
    embedding_dim: int = 256
    dropout: float = 0.5
    pretrained_backbone: str | None = None
    extra_channels: int = 0

    def __post_init__(self) -> None:
        if self.extra_channels < 0:
            raise ConfigError(f"extra_channels {self.extra_channels} must be >= 0")
        if len(self.aspp_rates) != 4 or any(r < 1 for r in self.aspp_rates):
            raise ConfigError(f"aspp_rates {self.aspp_rates} must be four positive dilations")
        if min(self.aspp_channels, self.num_classes, self.embedding_dim) < 1:
            raise ConfigError("aspp_channels, num_classes and embedding_dim must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout {self.dropout} must be in [0, 1)")

    @property
    def noise_channels(self) -> int:
        """Input channels of the second (noise) stream; 0 = no second stream."""
        return 3 * self.srm + self.extra_channels

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("pretrained_backbone")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CFLNetConfig:
        try:
            data: dict[str, Any] = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"unreadable model config {text[:200]!r}: {exc}") from exc
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}; "
                              "this model needs a newer cflnet-sdk")
        if "aspp_rates" in data:
            data["aspp_rates"] = tuple(data["aspp_rates"])
        return cls(**data)
