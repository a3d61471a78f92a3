"""cflnet-sdk: CFL-Net image forgery localization.

The public API imports no torch: ``Localizer`` and ``Prediction`` load their backend lazily, so
this package installs and runs on a Jetson with only numpy, Pillow and a runtime library.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cflnet_sdk._version import __version__
from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import (
    BackendUnavailableError,
    CFLNetError,
    ConfigError,
    DataError,
    EngineCompatibilityError,
    ImageError,
    ModelFileError,
)

if TYPE_CHECKING:
    from cflnet_sdk.localizer import Localizer
    from cflnet_sdk.prediction import Prediction

__all__ = [
    "BackendUnavailableError",
    "CFLNetError",
    "ConfigError",
    "Contract",
    "DataError",
    "EngineCompatibilityError",
    "ImageError",
    "Localizer",
    "ModelFileError",
    "Prediction",
    "__version__",
]

_LAZY = {"Localizer": "cflnet_sdk.localizer", "Prediction": "cflnet_sdk.prediction"}


def __getattr__(name: str) -> Any:
    """Import ``Localizer``/``Prediction`` on first use to keep ``import cflnet_sdk`` instant."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cflnet_sdk' has no attribute {name!r}")
