"""The cflnet TensorRT engine file: a small JSON header in front of the serialized plan.

Layout: ``b"CFLNETRT"`` magic, a little-endian uint32 header length, the UTF-8 JSON header,
then the plan bytes. The header lets a loader refuse an engine built for another TensorRT
version or GPU with a clear message *before* handing the plan to the deserializer. A raw
plan (e.g. from ``trtexec``) has no header and needs a contract given by the user.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from cflnet_sdk.errors import ModelFileError
from cflnet_sdk.fileio import write_bytes_atomic

MAGIC = b"CFLNETRT"
_LENGTH = struct.Struct("<I")


def write_engine(path: str | Path, plan: bytes, header: dict[str, Any]) -> Path:
    """Write ``header`` (JSON-serialisable) and ``plan`` atomically."""
    payload = json.dumps(header, sort_keys=True).encode("utf-8")
    write_bytes_atomic(path, MAGIC + _LENGTH.pack(len(payload)) + payload + bytes(plan))
    return Path(path)


def read_engine(path: str | Path) -> tuple[dict[str, Any] | None, bytes]:
    """Return ``(header, plan)``; ``header`` is None for a raw plan without our header."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError("no such engine file", path)
    data = path.read_bytes()
    if not data:
        raise ModelFileError("the engine file is empty; rebuild it with `cflnet-export engine`",
                             path)
    if not data.startswith(MAGIC):
        return None, data
    start = len(MAGIC) + _LENGTH.size
    if len(data) < start:
        raise ModelFileError("truncated engine header; rebuild the engine", path)
    (length,) = _LENGTH.unpack_from(data, len(MAGIC))
    try:
        header = json.loads(data[start:start + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(f"corrupt engine header ({exc}); rebuild the engine", path) from exc
    plan = data[start + length:]
    if not plan:
        raise ModelFileError("the engine file holds a header but no plan; rebuild it", path)
    return header, plan


def engine_contract(header: dict[str, Any] | None, path: str | Path | None = None):
    """The preprocessing contract recorded in an engine header (``"contract"``)."""
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.errors import CFLNetError

    value = (header or {}).get("contract")
    if value is None:
        raise ModelFileError("a raw TensorRT plan (or an engine header without 'contract') "
                             "carries no preprocessing contract; pass contract=Contract(...) "
                             "or rebuild it with `cflnet-export engine`", path)
    try:
        return Contract.from_json(value if isinstance(value, str) else json.dumps(value))
    except CFLNetError as exc:
        raise ModelFileError(str(exc), path) from exc


def _release(version: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` -> (10, 3, 0): the part of a TensorRT version that decides plan format."""
    parts = []
    for piece in str(version).split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def check_engine_header(header: dict[str, Any], trt_version: str,
                        gpu: tuple[str, str] | None = None,
                        path: str | Path | None = None) -> None:
    """Refuse an engine this TensorRT/GPU cannot run, before the deserializer fails obscurely.

    ``gpu`` is ``(name, compute capability "8.7")`` of the device that would run it (None or
    "unknown" skips the GPU check). Rules: a plan runs only on the TensorRT release it was
    built with, unless built ``version_compatible`` (then any later release of the same major
    version); it runs only on GPUs of the same compute capability, unless built with
    ``hardware_compat: "ampere+"`` (then any compute capability 8.0 or newer).
    """
    from cflnet_sdk.errors import EngineCompatibilityError

    rebuild = "rebuild it on this machine with `cflnet-export engine MODEL.onnx -o OUT.engine`"
    missing = [k for k in ("tensorrt_version", "compute_capability") if k not in header]
    if missing:
        raise ModelFileError(f"engine header lacks {', '.join(missing)}; {rebuild}", path)
    built, here = _release(header["tensorrt_version"]), _release(trt_version)
    if header.get("version_compatible"):
        if built[0] != here[0] or here < built:
            raise EngineCompatibilityError(
                f"version-compatible engine built with TensorRT {header['tensorrt_version']} "
                f"runs on later {built[0]}.x releases only; this machine has TensorRT "
                f"{trt_version}; {rebuild}", path)
    elif built != here:
        raise EngineCompatibilityError(
            f"engine built with TensorRT {header['tensorrt_version']}, this machine has "
            f"TensorRT {trt_version}: plans only load in the release that built them; {rebuild} "
            "(or build with --version-compatible)", path)
    if gpu is None or gpu[1] in ("", "unknown"):
        return
    name, capability = gpu
    wanted = str(header["compute_capability"])
    if header.get("hardware_compat") == "ampere+":
        if _release(capability)[:2] < (8, 0):
            raise EngineCompatibilityError(
                f"engine built hardware-compatible for Ampere and newer (compute capability "
                f">= 8.0); this GPU {name} has {capability}; {rebuild}", path)
    elif _release(capability)[:2] != _release(wanted)[:2]:
        raise EngineCompatibilityError(
            f"engine built for {header.get('gpu_name', 'a GPU')} (compute capability {wanted}); "
            f"this GPU {name} has {capability}; {rebuild} (or build with "
            "--hardware-compat ampere+)", path)
