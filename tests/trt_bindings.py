"""The names in TensorRT's Python bindings as published on PyPI, read without TensorRT.

Why: ``tensorrt.so`` cannot be imported without libnvinfer, which PyPI does not carry, but the
pybind11 module holds every class, method, property, enum member and keyword name as a
NUL-terminated string, and the pure-Python helpers (``nptype``, ``__version__``) live in the
wheel's ``__init__.py``. The wheels are downloaded once into the user cache folder.

Reading the strings: the linker stores a string that ends another one only once, as its tail
(``INPUT`` lives inside ``CONDITIONAL_INPUT``, ``INT8`` inside ``UINT8``, ``Runtime`` inside
``IPluginV3OneRuntime``). So a name counts as present when it is a whole NUL-terminated
identifier, or the tail of one starting at a word boundary: after ``_``, at a case change
(``ILogger`` -> ``Logger``), or anywhere inside an all-capitals enum name (``UINT8``). Prose
(docstrings mention removed names such as ``BuilderFlag.FP16``) and mangled C++ symbols never
count, and a tail must begin a word, so a misspelling is found only if it is itself a word-end
of some real name. What the strings cannot say is which class holds a name: the check is per
module, and the owner (``BuilderFlag`` of ``BuilderFlag.FP16``) is checked as a name of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

# TensorRT major -> the bindings releases checked: 10.3 is what JetPack 6.1/6.2 ship, 10.16 the
# last 10.x for servers; 11.4 is the current 11.x (JetPack 7.2+ and servers).
RELEASES: dict[int, tuple[tuple[str, str], ...]] = {
    10: (("tensorrt-cu12-bindings", "10.3.0"), ("tensorrt-cu12-bindings", "10.16.1.11")),
    11: (("tensorrt-cu13-bindings", "11.4.0.106"),),
}
# The same binary wherever the tests run (it is read, never imported).
PLATFORM = ("--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_17_x86_64")
UNREACHABLE = re.compile(r"NewConnectionError|Failed to establish|Temporary failure in name "
                         r"resolution|Name or service not known|Network is unreachable|"
                         r"Connection refused|No route to host|timed out|ProxyError|SSLError|"
                         r"Max retries exceeded|ConnectTimeout|ReadTimeout", re.IGNORECASE)
IDENTIFIER = re.compile(rb"(?<=\x00)[A-Za-z_][A-Za-z0-9_]*(?=\x00)")


class DownloadError(RuntimeError):
    """pip could not fetch a bindings wheel; ``unreachable`` when the index was not reached."""

    def __init__(self, requirement: str, output: str) -> None:
        self.unreachable = bool(UNREACHABLE.search(output))
        tail = "\n".join(output.strip().splitlines()[-6:])
        super().__init__(f"pip download {requirement} failed:\n{tail}")


@dataclass(frozen=True)
class Bindings:
    """The names one bindings wheel provides."""

    release: str
    names: frozenset[str]

    def has(self, name: str) -> bool:
        return name in self.names


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cflnet-sdk" / "trt-bindings"


def fetch_wheel(package: str, version: str) -> Path:
    """The cached wheel, downloaded with pip on first use (atomically, so runs can share it)."""
    folder = cache_dir()
    cached = sorted(folder.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    if cached:
        return cached[0]
    folder.mkdir(parents=True, exist_ok=True)
    requirement = f"{package}=={version}"
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", *PLATFORM, "--retries", "1",
             "--timeout", "20", "--disable-pip-version-check", "--dest", scratch, requirement],
            capture_output=True, text=True, timeout=600, check=False)
        wheels = sorted(Path(scratch).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise DownloadError(requirement, result.stdout + result.stderr)
        target = folder / wheels[0].name
        os.replace(wheels[0], target)
    return target


def word_tails(name: str) -> set[str]:
    """``name`` and its tails that start a word (see the module docstring)."""
    upper = name.upper() == name
    tails = {name}
    for i in range(1, len(name)):
        before, here = name[i - 1], name[i]
        after = name[i + 1] if i + 1 < len(name) else ""
        if before == "_" or (here.isupper() and (
                upper or before.islower() or before.isdigit()
                or (before.isupper() and after.islower()))):
            tails.add(name[i:])
    return tails


def binary_names(data: bytes) -> set[str]:
    """Names a pybind11 module can hold, from its NUL-terminated identifier strings."""
    names: set[str] = set()
    for match in IDENTIFIER.finditer(data):
        text = match.group().decode("ascii")
        if not text.startswith("_Z"):  # mangled C++ symbols
            names |= word_tails(text)
    return names


def init_names(source: str) -> set[str]:
    """What the wheel's ``__init__.py`` defines or attaches: functions, constants, attributes."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return names


@cache
def load(package: str, version: str) -> Bindings:
    """The names of one bindings release (downloading it on first use)."""
    with zipfile.ZipFile(fetch_wheel(package, version)) as wheel:
        files = wheel.namelist()
        binary = next(f for f in files if re.fullmatch(r"[^/]+/tensorrt\.so", f))
        init = next(f for f in files if re.fullmatch(r"[^/]+/__init__\.py", f))
        names = binary_names(b"\x00" + wheel.read(binary)) | init_names(
            wheel.read(init).decode("utf-8"))
    return Bindings(f"TensorRT {version}", frozenset(names))
