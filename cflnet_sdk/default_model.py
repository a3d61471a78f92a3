"""The model that ships inside the package, used when no model file is given."""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = Path(__file__).parent / "models" / "cflnet_default.onnx"
# The same network as a full training checkpoint (projection head included), to fine-tune.
DEFAULT_CHECKPOINT = DEFAULT_MODEL.with_suffix(".safetensors")


def default_model_path() -> Path | None:
    """The packaged default model, or None while this build ships none."""
    return DEFAULT_MODEL if DEFAULT_MODEL.is_file() else None


def require_default_model() -> Path:
    """The packaged default model, or a ModelFileError saying what to pass instead."""
    from cflnet_sdk.errors import ModelFileError

    path = default_model_path()
    if path is None:
        raise ModelFileError("no model given and this build ships no default model: pass a "
                             ".safetensors checkpoint, an .onnx export or a TensorRT .engine")
    return path


def named_checkpoint(value: str) -> str:
    """``default`` names the shipped model's checkpoint by its installed path (to fine-tune or
    average with); any other value is a path and passes unchanged."""
    from cflnet_sdk.errors import ModelFileError

    if value != "default":
        return value
    if not DEFAULT_CHECKPOINT.is_file():
        raise ModelFileError("this build ships no default model checkpoint: pass a "
                             ".safetensors checkpoint instead of 'default'")
    return str(DEFAULT_CHECKPOINT)
