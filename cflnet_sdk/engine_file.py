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
