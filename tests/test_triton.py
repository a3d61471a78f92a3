"""Triton model repositories: every config.pbtxt parses with Triton's own ModelConfig protobuf."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnx", reason="the Triton writer reads ONNX metadata (export extra)")
model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="parsing config.pbtxt needs `pip install tritonclient[grpc]`")


def parse(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


@pytest.fixture(scope="module")
def onnx_files(tiny_model, tmp_path_factory):
    from cflnet_sdk.export.onnx import export_onnx

    folder = tmp_path_factory.mktemp("triton-src")
    return {"batch": export_onnx(tiny_model, folder / "b.onnx", size=64, simplify=False),
            "static": export_onnx(tiny_model, folder / "s.onnx", size=64, simplify=False,
                                  dynamic_batch=False),
            "shape": export_onnx(tiny_model, folder / "d.onnx", size=64, simplify=False,
                                 dynamic_shape=True)}


def test_onnx_gpu_repository(onnx_files, tmp_path):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.triton import TritonOptions, write_triton_repository

    target = write_triton_repository(onnx_files["batch"], tmp_path, TritonOptions(
        max_batch=8, instances=2, accelerator="fp16"))
    assert (target / "1" / "model.onnx").read_bytes() == onnx_files["batch"].read_bytes()
    config = parse(target / "config.pbtxt")
    assert config.name == "cflnet" and config.platform == "onnxruntime_onnx"
    assert config.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in config.input] == [("image", [3, 64, 64])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("probability", [1, 64, 64])]
    assert config.input[0].data_type == model_config_pb2.TYPE_FP32
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    contract = Contract.from_json(config.parameters["cflnet.contract"].string_value)
    assert contract.size == (64, 64)
    assert config.parameters["cflnet.precision"].string_value == "fp32"


def test_static_and_dynamic_shape_cpu_configs(onnx_files, tmp_path):
    from cflnet_sdk.export.triton import TritonOptions, write_triton_repository

    static = parse(write_triton_repository(onnx_files["static"], tmp_path / "a",
                                           TritonOptions(kind="cpu")) / "config.pbtxt")
    assert static.max_batch_size == 0 and list(static.input[0].dims) == [1, 3, 64, 64]
    assert not static.HasField("dynamic_batching")
    assert static.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    shape = parse(write_triton_repository(onnx_files["shape"], tmp_path / "b", TritonOptions(
        name="cfl", kind="cpu", dynamic_batching=False)) / "config.pbtxt")
    assert shape.name == "cfl" and list(shape.output[0].dims) == [1, -1, -1]
    assert not shape.HasField("dynamic_batching")


def test_engine_repository_strips_header(tmp_path):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.engine_file import write_engine
    from cflnet_sdk.export.triton import TritonOptions, write_triton_repository

    header = {"contract": json.loads(Contract(64, 64).to_json()), "precision": "fp16",
              "profiles": [{"input": "image", "min": [1, 3, 64, 64], "opt": [4, 3, 64, 64],
                            "max": [16, 3, 64, 64]}], "tensorrt_version": "10.3.0"}
    engine = write_engine(tmp_path / "m.engine", b"RAWPLANBYTES", header)
    target = write_triton_repository(engine, tmp_path / "repo", TritonOptions())
    assert (target / "1" / "model.plan").read_bytes() == b"RAWPLANBYTES"
    config = parse(target / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 16
    assert config.parameters["cflnet.precision"].string_value == "fp16"
    from cflnet_sdk.errors import ConfigError

    with pytest.raises(ConfigError, match="exceeds the engine's profile maximum 16"):
        write_triton_repository(engine, tmp_path / "r2", TritonOptions(max_batch=32))
    with pytest.raises(ConfigError, match="GPU only"):
        write_triton_repository(engine, tmp_path / "r3", TritonOptions(kind="cpu"))


def test_bad_inputs(tmp_path):
    from cflnet_sdk.errors import ConfigError, ModelFileError
    from cflnet_sdk.export.triton import TritonOptions, write_triton_repository

    with pytest.raises(ModelFileError, match=r"nope\.onnx: no such model file"):
        write_triton_repository(tmp_path / "nope.onnx", tmp_path / "repo")
    raw = tmp_path / "raw.plan"
    raw.write_bytes(b"trtexec plan")
    with pytest.raises(ModelFileError, match="raw TensorRT plan"):
        write_triton_repository(raw, tmp_path / "repo")
    with pytest.raises(ConfigError, match="needs --kind gpu"):
        TritonOptions(kind="cpu", accelerator="fp16")
