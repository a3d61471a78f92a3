"""Packaging promises: torch-free public API, both CLIs, the stage namespaces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cflnet_sdk


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_import_is_torch_free():
    code = ("import sys, cflnet_sdk; from cflnet_sdk import Contract, CFLNetError; "
            "heavy = [m for m in ('torch', 'timm', 'tensorrt', 'onnx') if m in sys.modules]; "
            "print(','.join(heavy))")
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_cli_help_is_torch_free():
    code = ("import sys; from cflnet_sdk.cli import app; "
            "print('torch' in sys.modules)")
    assert _run(sys.executable, "-c", code).stdout.strip() == "False"


@pytest.mark.parametrize("command", ["cflnet", "cflnet-export"])
def test_console_scripts_have_help_and_version(command):
    script = str(Path(sys.executable).parent / command)  # installed beside this interpreter
    result = _run(script, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout
    result = _run(script, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"cflnet-sdk {cflnet_sdk.__version__}"


def test_stage_packages_live_in_the_namespace():
    import cflnet_sdk.export
    import cflnet_sdk.runtime
    import cflnet_sdk.training

    for module in (cflnet_sdk.training, cflnet_sdk.export, cflnet_sdk.runtime):
        assert module.__name__.startswith("cflnet_sdk.")


def test_errors_share_one_base():
    from cflnet_sdk import errors

    subclasses = [errors.ImageError, errors.ModelFileError, errors.EngineCompatibilityError,
                  errors.BackendUnavailableError, errors.DataError, errors.ConfigError]
    assert all(issubclass(cls, cflnet_sdk.CFLNetError) for cls in subclasses)
    assert "x.png: bad" in str(errors.ImageError("bad", "x.png"))


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os

    from cflnet_sdk.fileio import write_bytes_atomic

    path = tmp_path / "out.bin"
    write_bytes_atomic(path, b"data")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask
    assert path.read_bytes() == b"data"
