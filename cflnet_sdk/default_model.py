"""The model that ships inside the package, used when no model file is given.

Two files of one network: ``cflnet_default.onnx`` (float32 compute) for GPUs and any CPU, and
``cflnet_default-int8-cpu.onnx``, its u8s8 INT8 variant with its own operating point, which
runs about twice as fast on x86 CPUs with 8-bit dot-product instructions (AVX-512 VNNI,
AVX-VNNI, AMX). Without them ONNX Runtime's u8s8 kernels may saturate, so there the float32
file is the default too (docs/runtime.md, "The default model on a CPU").
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

MODELS = Path(__file__).parent / "models"
DEFAULT_MODEL = MODELS / "cflnet_default.onnx"
DEFAULT_CPU_MODEL = MODELS / "cflnet_default-int8-cpu.onnx"
# The same network as a full training checkpoint (projection head included), to fine-tune.
DEFAULT_CHECKPOINT = DEFAULT_MODEL.with_suffix(".safetensors")
# /proc/cpuinfo flags of x86 instructions that compute u8 x s8 dot products exactly.
INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


def default_model_path(device: str = "auto") -> Path | None:
    """The packaged default model for ``device`` ("auto", "cpu", "cuda[:N]"), or None while
    this build ships none: the INT8 CPU file where the model will run on a CPU that computes
    INT8 exactly, else the float32 file."""
    if not DEFAULT_MODEL.is_file():
        return None
    if DEFAULT_CPU_MODEL.is_file() and _runs_on_cpu(device) and cpu_has_int8_dot_product():
        return DEFAULT_CPU_MODEL
    return DEFAULT_MODEL


def require_default_model(device: str = "auto") -> Path:
    """The packaged default model for ``device``, or a ModelFileError saying what to pass
    instead."""
    from cflnet_sdk.errors import ModelFileError

    path = default_model_path(device)
    if path is None:
        raise ModelFileError("no model given and this build ships no default model: pass a "
                             ".safetensors checkpoint, an .onnx export or a TensorRT .engine")
    return path


@functools.cache
def cpu_has_int8_dot_product() -> bool:
    """Whether this x86 CPU has VNNI or AMX (Linux's /proc/cpuinfo; False elsewhere)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return not INT8_DOT_PRODUCT_FLAGS.isdisjoint(flags)


def _runs_on_cpu(device: str) -> bool:
    """Whether ONNX Runtime will run a model opened with ``device`` on the CPU."""
    kind = device.strip().lower().partition(":")[0]
    if kind != "auto":
        return kind == "cpu"
    try:
        import onnxruntime
    except ImportError:  # the Localizer will say what to install
        return False
    return _GPU_PROVIDERS.isdisjoint(onnxruntime.get_available_providers())


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
