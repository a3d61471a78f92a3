"""The backend protocol and registry, provider selection, and clear errors for bad model files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cflnet_sdk import Localizer
from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import (
    BackendUnavailableError,
    ModelFileError,
)
from cflnet_sdk.runtime import onnxruntime_backend as ortb
from cflnet_sdk.runtime.base import Backend, backends, open_backend, parse_device, resolve
from tests.test_localizer import onnx_model


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    return onnx_model(tiny_checkpoint, tmp_path_factory)


def test_registry_knows_the_three_backends_by_name_and_suffix():
    assert {"torch", "onnxruntime", "tensorrt"} <= set(backends())
    assert resolve("m.safetensors").name == "torch"
    assert resolve("m.ONNX").name == "onnxruntime"
    assert resolve("m.engine").name == resolve("m.plan").name == "tensorrt"
    assert resolve("m.bin", backend="onnxruntime").name == "onnxruntime"
    with pytest.raises(ModelFileError, match="suffix"):
        resolve("m.bin")
    with pytest.raises(BackendUnavailableError, match="unknown backend"):
        resolve("m.onnx", backend="openvino")


def test_a_file_given_to_another_backend_says_which_one_opens_it(tiny_checkpoint, tiny_onnx):
    with pytest.raises(ModelFileError, match=r"\.safetensors file is for the torch backend") as err:
        Localizer(tiny_checkpoint, backend="onnxruntime")
    with pytest.raises(ModelFileError, match="for the onnxruntime backend, not 'tensorrt'"):
        Localizer(tiny_onnx, backend="tensorrt")
    assert str(tiny_checkpoint) in str(err.value) and "cflnet-export" in str(err.value)


def test_loading_the_registry_imports_no_heavy_library():
    code = ("import sys; from cflnet_sdk.runtime.base import backends; backends(); "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'tensorrt') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(("device", "parsed"), [("cpu", ("cpu", 0)), ("cuda", ("cuda", 0)),
                                                ("CUDA:1", ("cuda", 1)), ("auto", ("auto", 0))])
def test_device_names(device, parsed):
    assert parse_device(device) == parsed


@pytest.mark.parametrize("device", ["gpu", "cpu:1", "cuda:x", ""])
def test_unknown_devices_are_refused(device):
    with pytest.raises(BackendUnavailableError, match="device"):
        parse_device(device)


def test_both_backends_follow_the_protocol(tiny_checkpoint, tiny_onnx):
    batch = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    outputs = []
    for path in (tiny_checkpoint, tiny_onnx):
        backend = open_backend(path, device="cpu")
        assert isinstance(backend, Backend)
        out = backend.run(batch)
        assert out.shape == (3, 64, 64) and out.dtype == np.float32
        outputs.append(out)
    assert np.abs(outputs[0] - outputs[1]).max() <= 1e-4


def test_provider_plan_orders_gpu_providers_first_and_honours_the_device():
    every = [ortb.TRT_EP, ortb.CUDA_EP, ortb.CPU_EP]
    assert [p for p, _ in ortb.provider_plan("auto", every)] == every
    assert [p for p, _ in ortb.provider_plan("auto", [ortb.CPU_EP])] == [ortb.CPU_EP]
    assert ortb.provider_plan("cpu", every) == [(ortb.CPU_EP, {})]
    assert ortb.provider_plan("cuda:1", every)[0] == (ortb.CUDA_EP, {"device_id": 1})
    with pytest.raises(BackendUnavailableError, match="onnxruntime-gpu"):
        ortb.provider_plan("cuda", [ortb.CPU_EP])


def test_openvino_runs_the_cpu_side_in_bfloat16_where_the_cpu_has_it(monkeypatch):
    every = [ortb.TRT_EP, ortb.CUDA_EP, ortb.OPENVINO_EP, ortb.CPU_EP]
    assert [p for p, _ in ortb.provider_plan("auto", every)] == every
    assert [p for p, _ in ortb.provider_plan("cpu", every)] == [ortb.OPENVINO_EP, ortb.CPU_EP]
    monkeypatch.setattr(ortb, "cpu_flags", lambda: frozenset({"avx2", "amx_bf16"}))
    options = dict(ortb.provider_plan("cpu", every))[ortb.OPENVINO_EP]
    assert options["device_type"] == "CPU" and '"INFERENCE_PRECISION_HINT": "bf16"' in \
        options["load_config"]
    monkeypatch.setattr(ortb, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert ortb.openvino_options() == {"device_type": "CPU"}  # no native bf16: float32


def test_openvino_maps_match_onnx_runtime_float32(tile_onnx):
    import onnxruntime as ort

    if ortb.OPENVINO_EP not in ort.get_available_providers():
        pytest.skip("onnxruntime-openvino is not installed (pip install 'cflnet-sdk[openvino]')")
    openvino = open_backend(tile_onnx, device="cpu")
    shape = (4, openvino.contract.channels, *openvino.contract.size)
    batch = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert openvino.providers[0] == ortb.OPENVINO_EP
    assert openvino.precision == ("bf16" if "load_config" in ortb.openvino_options() else "fp32")
    reference = ortb.OnnxRuntimeBackend(ortb.create_session(tile_onnx, [(ortb.CPU_EP, {})]),
                                        openvino.contract)
    assert np.abs(openvino.run(batch) - reference.run(batch)).max() < 0.05


def test_session_is_tuned_for_the_cores_we_have():
    import onnxruntime as ort

    from cflnet_sdk.runtime.base import cpu_count

    options = ortb.session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.intra_op_num_threads == cpu_count()


def test_asking_for_cuda_without_it_is_an_error(tiny_checkpoint, tiny_onnx, tmp_path):
    import onnxruntime as ort
    import torch

    if ortb.CUDA_EP not in ort.get_available_providers():
        with pytest.raises(BackendUnavailableError, match="cuda"):
            Localizer(tiny_onnx, device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            Localizer(tiny_checkpoint, device="cuda:0")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not read: the device is refused first")
    with pytest.raises(BackendUnavailableError, match="GPU"):
        Localizer(engine, device="cpu")


@pytest.mark.gpu
def test_cuda_provider_is_really_used_when_asked(request):
    import onnxruntime as ort

    if ortb.CUDA_EP not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
    # exported only now: a GPU machine without the export extra skips above, not errors here
    loc = Localizer(request.getfixturevalue("tiny_onnx"), device="cuda")
    assert loc.providers[0] == ortb.CUDA_EP and loc.device == "cuda:0"


def test_model_file_errors_name_the_file(tmp_path, tiny_onnx):
    missing = tmp_path / "nothing.onnx"
    with pytest.raises(ModelFileError, match=r"nothing\.onnx"):
        Localizer(missing)
    for name, data in [("garbage.onnx", b"\x00not a protobuf" * 10),
                       ("garbage.safetensors", b"{}garbage")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ModelFileError, match=re.escape(name)):
            Localizer(path)


def test_onnx_without_our_metadata_needs_a_contract(tmp_path, tiny_onnx):
    import onnx

    proto = onnx.load(str(tiny_onnx))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ModelFileError, match="contract"):
        Localizer(bare)
    loc = Localizer(bare, contract=Contract(height=64, width=64))
    assert loc.predict(np.zeros((10, 10, 3), np.uint8)).probability.shape == (10, 10)


def test_fixed_batch_and_size_models(tiny_checkpoint, tmp_path_factory):
    path = onnx_model(tiny_checkpoint, tmp_path_factory, "tiny-batch1", dynamic_batch=False,
                      simplify=False)
    loc = Localizer(path)
    assert loc.backend.max_batch == 1
    images = [np.full((20 + i, 30, 3), 40 * i, np.uint8) for i in range(3)]
    batched = loc.predict_batch(images, batch_size=3)  # split into runs of one
    assert [p.probability.shape for p in batched] == [(20, 30), (21, 30), (22, 30)]
    with pytest.raises(ModelFileError, match="contract size"):
        Localizer(path, contract=Contract(height=96, width=96))


def test_tensorrt_files_without_a_contract_are_refused(tmp_path):
    """Release and GPU rules are tested with check_engine_header in test_tensorrt.py."""
    from cflnet_sdk.engine_file import write_engine

    raw = tmp_path / "raw.plan"
    raw.write_bytes(b"not our header, a raw plan")
    with pytest.raises(ModelFileError, match="contract="):
        Localizer(raw)
    empty = write_engine(tmp_path / "nocontract.engine", b"plan", {"tensorrt_version": "10.0"})
    with pytest.raises(ModelFileError, match=r"nocontract\.engine.*contract="):
        Localizer(empty)


def test_tensorrt_missing_is_a_clear_error(tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raw = tmp_path / "raw.plan"
        raw.write_bytes(b"raw plan")
        with pytest.raises(BackendUnavailableError, match=r"pip install 'cflnet-sdk\[tensorrt\]'"):
            Localizer(raw, contract=Contract())
    else:
        pytest.skip("tensorrt is installed here; tests/test_tensorrt_runtime.py covers it")


def test_benchmark_command_runs_backends_side_by_side(tiny_checkpoint, tiny_onnx, tmp_path):
    from typer.testing import CliRunner

    from cflnet_sdk.cli import app

    report = tmp_path / "bench.json"
    args = ["benchmark", "--model", str(tiny_checkpoint), "--model", str(tiny_onnx),
            "--backend", "torch,onnxruntime", "--batch-sizes", "1,2", "--size", "64",
            "--warmup", "1", "--iterations", "2", "--json", str(report)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    rows = json.loads(report.read_text())
    assert [(r["backend"], r["batch_size"]) for r in rows] == [
        ("torch", 1), ("onnxruntime", 1), ("torch", 2), ("onnxruntime", 2)]
    for row in rows:
        assert 0 < row["latency_p50"] <= row["latency_p90"] <= row["latency_p99"]
        assert row["throughput"] > 0 and row["e2e_per_image"] > 0 and row["peak_rss_mb"] > 0
    assert set(rows[0]["stages"]) == {"decode", "preprocess", "postprocess"}
    assert "onnxruntime" in out.output and "p50" in out.output
