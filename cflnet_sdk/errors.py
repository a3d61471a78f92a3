"""One exception family for the whole SDK, so callers can catch ``CFLNetError`` and nothing else.

Every message says what was wrong (naming the file where there is one) and what to do next.
"""

from __future__ import annotations

from pathlib import Path


class CFLNetError(Exception):
    """Base class of every error the SDK raises on purpose."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ImageError(CFLNetError):
    """An image (file or array) that cannot be decoded or used."""


class ModelFileError(CFLNetError):
    """A checkpoint, ONNX file or engine that is missing, corrupt or not a CFL-Net model."""


class EngineCompatibilityError(CFLNetError):
    """A model file that is valid but cannot run here (other TensorRT version, GPU, shape)."""


class BackendUnavailableError(CFLNetError):
    """A backend whose library or device is not installed or not present on this machine."""


class DataError(CFLNetError):
    """A dataset, manifest or mask that is missing, unreadable or misaligned with its image."""


class ConfigError(CFLNetError):
    """A model or training configuration with unknown or inconsistent values."""
