"""The preprocessing contract: the one definition of how pixels become the model's input.

A contract travels inside every model file (safetensors metadata, ONNX metadata, engine header),
and training, export and every runtime backend call the same functions below, so a model can
never be run with constants other than the ones it was trained with.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from cflnet_sdk.errors import ConfigError, ModelFileError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONTRACT_VERSION = 3  # 3: the image-level decision; 1 and 2 read with its default
# Residual grey levels (summed over R, G, B) that an error-level channel maps to 1.0.
ELA_SCALE = 32.0

ResizeRule = Literal["bilinear", "bilinear-cv2"]
ChannelOrder = Literal["RGB", "BGR"]
Mode = Literal["resize", "tile"]


@dataclass(frozen=True)
class Contract:
    """Input size, channel order, normalisation, resize rule and mask threshold of a model.

    ``mean`` and ``std`` apply to the channels in ``channel_order`` (the authors apply the
    ImageNet RGB constants to BGR pixels, and an imported checkpoint keeps exactly that).
    ``resize`` is ``"bilinear"`` (Pillow, antialiased when shrinking) or ``"bilinear-cv2"``
    (OpenCV ``INTER_LINEAR``: no antialiasing, as in the authors' data loader).

    ``mode`` says how an image of any size meets the fixed input: ``"resize"`` (the paper's:
    the whole image is resized to ``height x width``) or ``"tile"`` (the image's own pixels in
    ``height x width`` windows overlapping by ``tile_overlap``, by default a quarter of the
    smaller side on the 8-pixel grid; above ``max_pixels``, if set,
    the image is first downscaled). ``ela_qualities`` adds one input channel per JPEG quality
    after the three colour channels: the error level of the whole image at that quality
    (:func:`error_level`), a compression-history cue the paper's network does not have.

    ``threshold`` cuts the probability map into the mask; ``decision_threshold`` is the
    image-level operating point: ``score >= decision_threshold`` is the verdict ``tampered``
    (None: ``threshold``, as models before contract version 3 decided). ``false_alarm_rate``
    records the share of unedited photos it was chosen to call tampered, so a user knows what
    the verdict costs. ``copy_move_threshold``: the verdict also weighs copy-move evidence
    (:mod:`cflnet_sdk.fusion`), at this operating point on its score; None: the network alone.
    """

    height: int = 256
    width: int = 256
    channel_order: ChannelOrder = "RGB"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: ResizeRule = "bilinear"
    threshold: float = 0.5
    mode: Mode = "resize"
    tile_overlap: int | None = None  # None: a quarter of the smaller side, a multiple of 8
    max_pixels: int = 0  # tile mode: downscale larger images to this many pixels; 0 = never
    ela_qualities: tuple[int, ...] = ()
    decision_threshold: float | None = None
    false_alarm_rate: float | None = None
    copy_move_threshold: float | None = None
    version: int = field(default=CONTRACT_VERSION)

    def __post_init__(self) -> None:
        if self.tile_overlap is None:
            object.__setattr__(self, "tile_overlap", min(self.height, self.width) // 32 * 8)
        problems = []
        if self.height < 32 or self.width < 32 or self.height % 32 or self.width % 32:
            problems.append(f"input size {self.height}x{self.width} must be multiples of 32")
        if self.channel_order not in ("RGB", "BGR"):
            problems.append(f"channel_order {self.channel_order!r} is not 'RGB' or 'BGR'")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append("mean and std need three values each, std > 0")
        if self.resize not in ("bilinear", "bilinear-cv2"):
            problems.append(f"resize {self.resize!r} is not 'bilinear' or 'bilinear-cv2'")
        for name in ("threshold", "decision_threshold", "false_alarm_rate",
                     "copy_move_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                problems.append(f"{name} {value} is outside [0, 1]")
        if self.mode not in ("resize", "tile"):
            problems.append(f"mode {self.mode!r} is not 'resize' or 'tile'")
        # The overlap only matters in tile mode, so only there is it held to the tile size.
        half = min(self.height, self.width) // 2
        if self.tile_overlap < 0 or self.tile_overlap % 8 or \
                (self.mode == "tile" and self.tile_overlap > half):
            problems.append(f"tile_overlap {self.tile_overlap} must be a multiple of 8 within "
                            f"[0, {half}] (half the tile) in tile mode; tiles then keep the "
                            "8x8 JPEG grid")
        if self.max_pixels < 0 or 0 < self.max_pixels < self.height * self.width:
            problems.append(f"max_pixels {self.max_pixels} must be 0 (off) or at least one "
                            "input's worth of pixels")
        if any(not 1 <= q <= 100 for q in self.ela_qualities):
            problems.append(f"ela_qualities {self.ela_qualities} must be JPEG qualities 1-100")
        if self.version != CONTRACT_VERSION:
            problems.append(f"contract version {self.version} is not {CONTRACT_VERSION}; "
                            "upgrade cflnet-sdk to read this model")
        if problems:
            raise ConfigError("invalid preprocessing contract: " + "; ".join(problems))

    @classmethod
    def authors(cls, size: int = 224) -> Contract:
        """The contract of the authors' released checkpoint: BGR pixels, OpenCV resize."""
        return cls(height=size, width=size, channel_order="BGR", resize="bilinear-cv2")

    def uncalibrated(self) -> Contract:
        """This contract without its operating point: what new weights (a fine-tune, an
        average) inherit, since a decision chosen for other weights says nothing about them."""
        return replace(self, decision_threshold=None, false_alarm_rate=None,
                       copy_move_threshold=None)

    @property
    def fuses_copy_move(self) -> bool:
        """Whether the verdict includes copy-move evidence: the contract sets its operating
        point (as the shipped default's does)."""
        return self.copy_move_threshold is not None

    @property
    def decision(self) -> float:
        """The image-level operating point on ``Prediction.score``."""
        return self.threshold if self.decision_threshold is None else self.decision_threshold

    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)`` of the model input."""
        return self.height, self.width

    @property
    def channels(self) -> int:
        """Input channels: three colour channels, then one per error-level quality."""
        return 3 + len(self.ela_qualities)

    def with_size(self, height: int, width: int) -> Contract:
        return replace(self, height=height, width=width)

    def check_channels(self, channels: int, path: str | Path | None = None) -> None:
        """Refuse a model whose input channel count is not this contract's."""
        if channels != self.channels:
            raise ModelFileError(
                f"the model takes {channels} input channels, its contract gives {self.channels} "
                f"(R, G, B and error levels at JPEG qualities {list(self.ela_qualities)}); "
                "re-export the model, or pass a contract with matching ela_qualities", path)

    # -- serialisation -------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Contract:
        """Read a contract written by this or an earlier version (fewer fields, same meaning:
        version 1 had resize mode only, version 2 no image-level decision)."""
        try:
            data: dict[str, Any] = json.loads(text)
            for key in ("mean", "std", "ela_qualities"):
                if key in data:
                    data[key] = tuple(data[key])
            if data.get("version") in (1, 2):  # same meaning, fewer fields: defaults apply
                data["version"] = CONTRACT_VERSION
            return cls(**data)
        except ConfigError:
            raise
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            raise ConfigError(f"unreadable preprocessing contract {text[:200]!r}: {exc}") from exc

    # -- pixels -> tensor ----------------------------------------------------------------
    def input_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> HxWxC uint8 input channels at the image's own size.

        Colour channels in ``channel_order``, then the error levels, computed on the whole
        image so that its JPEG grid is the one the image was saved with.
        """
        colour = rgb[..., ::-1] if self.channel_order == "BGR" else rgb
        if not self.ela_qualities:
            return colour
        if rgb.shape[0] * rgb.shape[1] < PARALLEL_ELA_PIXELS:
            levels = [error_level(rgb, quality) for quality in self.ela_qualities]
        else:  # JPEG coding and OpenCV release the GIL: one re-save per core
            with ThreadPoolExecutor(len(self.ela_qualities)) as pool:
                levels = list(pool.map(lambda quality: error_level(rgb, quality),
                                       self.ela_qualities))
        return np.concatenate([colour, np.stack(levels, axis=2)], axis=2)

    def resize_image(self, pixels: np.ndarray) -> np.ndarray:
        """Resize HxWxC uint8 input pixels to the model size with the contract's rule."""
        return self.resize_to(pixels, self.height, self.width)

    def resize_to(self, pixels: np.ndarray, height: int, width: int) -> np.ndarray:
        """Resize HxWxC uint8 input pixels to ``height x width`` with the contract's rule."""
        if pixels.shape[:2] == (height, width):
            return pixels
        if self.resize == "bilinear-cv2":
            return _resize_cv2_linear(pixels, height, width)
        return _resize_pillow(pixels, height, width)

    def resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """Resize a boolean HxW mask to the model size with nearest neighbour."""
        if mask.shape == self.size:
            return mask.astype(bool, copy=False)
        image = Image.fromarray(mask.astype(np.uint8) * 255)
        return np.asarray(image.resize((self.width, self.height), Image.NEAREST)) > 127

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        """HxWxC uint8 input pixels (from ``input_pixels``) -> CxHxW float32 model input."""
        planes = np.ascontiguousarray(pixels.transpose(2, 0, 1))  # lookups read contiguously
        out = np.empty(planes.shape, dtype=np.float32)
        for c, table in enumerate(self._lookup_tables()):
            np.take(table, planes[c], out=out[c])
        return out

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB of any size -> CxHxW float32 input, resized to the model size."""
        return self.normalize(self.resize_image(self.input_pixels(rgb)))

    def _lookup_tables(self) -> np.ndarray:
        # Colour: (x / 255 - mean) / std; error level: x / ELA_SCALE. For every uint8 value,
        # computed in float64 then rounded once.
        levels = np.arange(256, dtype=np.float64)
        colour = (levels[None, :] / 255.0 - np.asarray(self.mean)[:, None]) / \
            np.asarray(self.std)[:, None]
        error = np.repeat(levels[None, :] / ELA_SCALE, len(self.ela_qualities), axis=0)
        return np.concatenate([colour, error]).astype(np.float32)

    # -- model output -> original image ---------------------------------------------------
    def restore_probability(self, probability: np.ndarray, height: int, width: int) -> np.ndarray:
        """Bring a model-size probability map back to the original image size, in [0, 1]."""
        probability = np.asarray(probability, dtype=np.float32)
        if probability.shape != (height, width):
            image = Image.fromarray(probability)  # float32 -> mode "F"
            probability = np.asarray(image.resize((width, height), Image.BILINEAR))
        return np.clip(probability, 0.0, 1.0)


# From this many pixels on the error levels are computed in threads: a 10 MP photo's three
# re-saves took 0.41 s one after the other and 0.23 s in threads on 2 cores; a 384x256 image's
# take 2 ms either way, where starting threads is not worth it.
PARALLEL_ELA_PIXELS = 2**20


def error_level(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Error level analysis: |image - its JPEG re-save at ``quality``|, summed over R, G, B.

    Regions whose compression history differs from the rest (pasted from another JPEG,
    resampled, inpainted) change by another amount when saved again. HxW uint8 (clipped at 255).
    """
    import cv2  # here, not at the top: `import cflnet_sdk` stays light

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        resaved = np.asarray(decoded.convert("RGB"))
    # OpenCV's saturating uint8 arithmetic is exactly min(|a - b| summed, 255), and on a 12 MP
    # photo a third of the time numpy's int16 round trip takes.
    red, green, blue = cv2.split(cv2.absdiff(np.ascontiguousarray(rgb), resaved))
    return cv2.add(cv2.add(red, green), blue)


def _resize_pillow(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pillow bilinear (antialiased when shrinking): colour as RGB, other channels one by one."""
    size = (width, height)
    colour = np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., :3])).resize(
        size, Image.BILINEAR))
    if pixels.shape[2] == 3:
        return colour
    others = [np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize(
        size, Image.BILINEAR)) for c in range(3, pixels.shape[2])]
    return np.concatenate([colour, np.stack(others, axis=2)], axis=2)


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
    # Works on any channel count (HxWxC).
    """OpenCV-compatible bilinear resize (within one grey level), without needing OpenCV."""
    y0, y1, fy = _cv2_linear_taps(rgb.shape[0], height)
    x0, x1, fx = _cv2_linear_taps(rgb.shape[1], width)
    image = rgb.astype(np.float32)
    rows = image[y0] * (1 - fy)[:, None, None] + image[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
