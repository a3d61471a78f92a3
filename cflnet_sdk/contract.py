"""The preprocessing contract: the one definition of how pixels become the model's input.

A contract travels inside every model file (safetensors metadata, ONNX metadata, engine header),
and training, export and every runtime backend call the same functions below, so a model can
never be run with constants other than the ones it was trained with.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
from PIL import Image

from cflnet_sdk.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTRACT_VERSION = 1

ResizeRule = Literal["bilinear", "bilinear-cv2"]
ChannelOrder = Literal["RGB", "BGR"]


@dataclass(frozen=True)
class Contract:
    """Input size, channel order, normalisation, resize rule and mask threshold of a model.

    ``mean`` and ``std`` apply to the channels in ``channel_order`` (the authors apply the
    ImageNet RGB constants to BGR pixels, and an imported checkpoint keeps exactly that).
    ``resize`` is ``"bilinear"`` (Pillow, antialiased when shrinking) or ``"bilinear-cv2"``
    (OpenCV ``INTER_LINEAR``: no antialiasing, as in the authors' data loader).
    """

    height: int = 256
    width: int = 256
    channel_order: ChannelOrder = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: ResizeRule = "bilinear"
    threshold: float = 0.5
    version: int = field(default=CONTRACT_VERSION)

    def __post_init__(self) -> None:
        problems = []
        if self.height < 32 or self.width < 32 or self.height % 32 or self.width % 32:
            problems.append(f"input size {self.height}x{self.width} must be multiples of 32")
        if self.channel_order not in ("RGB", "BGR"):
            problems.append(f"channel_order {self.channel_order!r} is not 'RGB' or 'BGR'")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need three values each, std > 0")
        if self.resize not in ("bilinear", "bilinear-cv2"):
            problems.append(f"resize {self.resize!r} is not 'bilinear' or 'bilinear-cv2'")
        if not 0.0 <= self.threshold <= 1.0:
            problems.append(f"threshold {self.threshold} is outside [0, 1]")
        if self.version != CONTRACT_VERSION:
            problems.append(f"contract version {self.version} is not {CONTRACT_VERSION}; "
                            "upgrade cflnet-sdk to read this model")
        if problems:
            raise ConfigError("invalid preprocessing contract: " + "; ".join(problems))

    @classmethod
    def authors(cls, size: int = 224) -> Contract:
        """The contract of the authors' released checkpoint: BGR pixels, OpenCV resize."""
        return cls(height=size, width=size, channel_order="BGR", resize="bilinear-cv2")

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the model input."""
        return self.height, self.width

    def with_size(self, height: int, width: int) -> Contract:
        return replace(self, height=height, width=width)

    # -- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Contract:
        try:
            data: dict[str, Any] = json.loads(text)
            data["mean"], data["std"] = tuple(data["mean"]), tuple(data["std"])
            return cls(**data)
        except ConfigError:
            raise
        except (TypeError, KeyError, ValueError) as exc:
            raise ConfigError(f"unreadable preprocessing contract {text[:200]!r}: {exc}") from exc

    # -- pixels -> tensor ----------------------------------------------------------------
    def resize_image(self, rgb: np.ndarray) -> np.ndarray:
        """Resize an HxWx3 uint8 RGB image to the model size with the contract's rule."""
        if rgb.shape[:2] == self.size:
            return rgb
        if self.resize == "bilinear-cv2":
            return _resize_cv2_linear(rgb, self.height, self.width)
        return np.asarray(Image.fromarray(rgb).resize((self.width, self.height), Image.BILINEAR))

    def resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """Resize a boolean HxW mask to the model size with nearest neighbour."""
        if mask.shape == self.size:
            return mask.astype(bool, copy=False)
        image = Image.fromarray(mask.astype(np.uint8) * 255)
        return np.asarray(image.resize((self.width, self.height), Image.NEAREST)) > 127

    def normalize(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB at model size -> 3xHxW float32 in channel order, normalised."""
        pixels = rgb[..., ::-1] if self.channel_order == "BGR" else rgb
        out = np.empty((3, *pixels.shape[:2]), dtype=np.float32)
        for c, table in enumerate(self._lookup_tables()):
            np.take(table, pixels[..., c], out=out[c])
        return out

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB of any size -> 3xHxW float32 model input."""
        return self.normalize(self.resize_image(rgb))

    def _lookup_tables(self) -> np.ndarray:
        # (x / 255 - mean) / std for every uint8 value, computed in float64 then rounded once.
        levels = np.arange(256, dtype=np.float64) / 255.0
        mean, std = np.asarray(self.mean)[:, None], np.asarray(self.std)[:, None]
        return ((levels[None, :] - mean) / std).astype(np.float32)

    # -- model output -> original image ---------------------------------------------------
    def restore_probability(self, probability: np.ndarray, height: int, width: int) -> np.ndarray:
        """Bring a model-size probability map back to the original image size, in [0, 1]."""
        probability = np.asarray(probability, dtype=np.float32)
        if probability.shape != (height, width):
            image = Image.fromarray(probability)  # float32 -> mode "F"
            probability = np.asarray(image.resize((width, height), Image.BILINEAR))
        return np.clip(probability, 0.0, 1.0)


def _cv2_linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of OpenCV's INTER_LINEAR along one axis (half-pixel centres)."""
    position = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
    lower = np.floor(position)
    frac = position - lower
    frac[lower < 0] = 0.0
    lower = np.clip(lower, 0, src - 1).astype(np.intp)
    frac[lower >= src - 1] = 0.0
    upper = np.minimum(lower + 1, src - 1)
    return lower, upper, frac.astype(np.float32)


def _resize_cv2_linear(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV-compatible bilinear resize (within one grey level), without needing OpenCV."""
    y0, y1, fy = _cv2_linear_taps(rgb.shape[0], height)
    x0, x1, fx = _cv2_linear_taps(rgb.shape[1], width)
    image = rgb.astype(np.float32)
    rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
