"""The one protocol every runtime backend implements, and the registry that finds them.

A backend turns a batch of contract-normalised inputs (whole resized images, or tiles of the
contract's size) into tampered-class probabilities at the model size; decoding, resizing,
tiling and everything else stays in the shared code, so backends stay
small and cannot drift apart. Adding a backend is one file in this folder named
``*_backend.py`` that calls :func:`register` at import; the module must not import its heavy
library at module level (``import cflnet_sdk`` and ``cflnet --help`` stay instant and torch-free).
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import BackendUnavailableError, ModelFileError


@runtime_checkable
class Backend(Protocol):
    """A loaded model: ``(N, C, H, W)`` float32 -> ``(N, H, W)`` float32 probabilities.

    ``C`` is ``contract.channels`` (R, G, B, then any error-level channels), ``H x W`` the
    contract's size.
    """

    name: str  # registry name: "torch", "onnxruntime", "tensorrt"
    device: str  # what actually runs it, e.g. "cpu", "cuda:0"
    contract: Contract  # preprocessing the model expects
    precision: str  # what the file computes in: fp32, fp16, int8-cpu, int8-tensorrt (reports)
    max_batch: int | None  # largest batch one run() accepts; None = unlimited
    thread_safe: bool  # True if run() may be called from several threads at once

    def run(self, batch: np.ndarray) -> np.ndarray: ...


Opener = Callable[..., Backend]  # opener(path, *, device: str, contract: Contract | None)


@dataclass(frozen=True)
class BackendInfo:
    """How to open one kind of model file; ``open`` imports its library only when called."""

    name: str
    suffixes: tuple[str, ...]
    open: Opener
    install_hint: str


_REGISTRY: dict[str, BackendInfo] = {}
_DISCOVERED = False
_DISCOVERY_LOCK = threading.Lock()


def register(info: BackendInfo) -> BackendInfo:
    """Make a backend available by name and by file suffix."""
    _REGISTRY[info.name] = info
    return info


def backends() -> dict[str, BackendInfo]:
    """Every registered backend, importing the light ``*_backend`` modules of this folder once."""
    global _DISCOVERED
    with _DISCOVERY_LOCK:
        if not _DISCOVERED:
            for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
                if module.name.endswith("_backend"):
                    importlib.import_module(f"{__package__}.{module.name}")
            _DISCOVERED = True
    return dict(_REGISTRY)


def resolve(path: str | Path, backend: str = "auto") -> BackendInfo:
    """The backend named ``backend``, or for ``"auto"`` the one owning the file's suffix."""
    known = backends()
    suffix = Path(path).suffix.lower()
    owner = next((info for info in known.values() if suffix in info.suffixes), None)
    if backend != "auto":
        if backend not in known:
            raise BackendUnavailableError(f"unknown backend {backend!r}; choose one of "
                                          f"{', '.join(sorted(known))} or 'auto'")
        if owner is not None and owner.name != backend:  # else its loader's error is cryptic
            raise ModelFileError(f"a {suffix} file is for the {owner.name} backend, not "
                                 f"{backend!r}: pass backend='auto' or {owner.name!r}, or "
                                 f"export it (`cflnet-export --help`)", path)
        return known[backend]
    if owner is not None:
        return owner
    suffixes = ", ".join(s for info in known.values() for s in info.suffixes)
    raise ModelFileError(f"cannot tell the backend from the suffix {suffix or '(none)'!r}; use "
                         f"one of {suffixes}, or pass backend=...", path)


def open_backend(path: str | Path, backend: str = "auto", device: str = "auto",
                 contract: Contract | None = None) -> Backend:
    """Load ``path`` with the chosen backend; ``contract`` overrides the one in the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("no such model file; check the path (expected .safetensors, "
                             ".onnx or .engine)", path)
    return resolve(path, backend).open(path, device=device, contract=contract)


def cpu_count() -> int:
    """Cores this process may use (cgroup/affinity aware where the OS says so)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's instruction-set flags as Linux reports them (/proc/cpuinfo); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def parse_device(device: str) -> tuple[str, int]:
    """``"cpu"`` -> ("cpu", 0); ``"cuda"`` -> ("cuda", 0); ``"cuda:1"`` -> ("cuda", 1)."""
    kind, _, index = device.strip().lower().partition(":")
    if kind not in ("auto", "cpu", "cuda") or (index and not index.isdigit()) or \
            (index and kind != "cuda"):
        raise BackendUnavailableError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' "
                                      "or 'cuda:N'")
    return kind, int(index or 0)
