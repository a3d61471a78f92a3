"""The real ``cflnet-export`` command, run as a subprocess."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime", reason="the CLI verifies exports with onnxruntime")
pytest.importorskip("polygraphy", reason="the check command compares with polygraphy")


def cflnet_export(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = shutil.which("cflnet-export") or os.path.join(os.path.dirname(sys.executable),
                                                         "cflnet-export")
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "tiny.onnx"
    result = cflnet_export("onnx", tiny_checkpoint, "-o", out, "--dynamic-shape")
    return out, result


def test_help_lists_the_commands():
    result = cflnet_export("--help")
    assert result.returncode == 0
    for command in ("onnx", "engine", "triton", "check"):
        assert command in result.stdout


def test_onnx_export_verifies_against_pytorch(exported):
    out, result = exported
    assert result.returncode == 0, result.stderr
    assert out.is_file() and f"wrote {out}" in result.stdout
    for probes in ("random (4 images)", "photos", "random 64x128"):
        assert probes in result.stdout
    assert "FAILED" not in result.stdout


def test_check_passes_and_reports_figures(exported, tiny_checkpoint):
    out, _ = exported
    result = cflnet_export("check", out, "--reference", tiny_checkpoint, "--count", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "max abs error" in result.stdout and "mask IoU" in result.stdout
    assert re.search(r"pixel AUC (\S+) -> \1 \(diff [+-]0\.0000\)", result.stdout)


def test_check_fails_with_exit_1_beyond_tolerance(exported, tiny_checkpoint):
    out, _ = exported
    result = cflnet_export("check", out, "--reference", tiny_checkpoint, "--count", "1",
                           "--atol", "0")
    assert result.returncode == 1
    assert "FAILED" in result.stdout


def test_triton_repository_from_onnx(exported, tmp_path):
    out, _ = exported
    result = cflnet_export("triton", out, "-o", tmp_path / "repo", "--kind", "cpu",
                           "--max-batch", "4")
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "repo" / "cflnet" / "config.pbtxt").read_text()
    assert "max_batch_size: 4" in text and "KIND_CPU" in text
    assert (tmp_path / "repo" / "cflnet" / "1" / "model.onnx").is_file()


def test_missing_checkpoint_is_a_clean_error(tmp_path):
    result = cflnet_export("onnx", tmp_path / "nope.safetensors", "-o", tmp_path / "x.onnx")
    assert result.returncode == 2
    assert "error:" in result.stderr and "nope.safetensors: no such checkpoint" in result.stderr
    assert "Traceback" not in result.stderr


def test_foreign_file_is_a_clean_error(tmp_path):
    bogus = tmp_path / "model.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    result = cflnet_export("onnx", bogus, "-o", tmp_path / "x.onnx")
    assert result.returncode == 2 and "model.safetensors" in result.stderr
    assert "Traceback" not in result.stderr


def test_engine_without_tensorrt_is_a_clean_error(exported, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    out, _ = exported
    result = cflnet_export("engine", out, "-o", tmp_path / "m.engine", "--fp16")
    assert result.returncode == 2 and "pip install cflnet-sdk[tensorrt]" in result.stderr
