"""FP32 ONNX export: parity with PyTorch, metadata, single-file layout, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="the export tests run the ONNX file in onnxruntime")
pytest.importorskip("onnxslim", reason="the exporter simplifies with onnxslim (export extra)")


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def reference(model, batch: np.ndarray) -> np.ndarray:
    import torch

    from cflnet_sdk.training.model import CFLNetInference

    with torch.no_grad():
        return CFLNetInference(model).eval()(torch.from_numpy(batch)).numpy()


@pytest.fixture(scope="module")
def batch_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    from cflnet_sdk.export.onnx import export_onnx

    return export_onnx(tiny_checkpoint, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


@pytest.fixture(scope="module")
def shape_onnx(tiny_model, tmp_path_factory) -> Path:
    from cflnet_sdk.export.onnx import export_onnx

    return export_onnx(tiny_model, tmp_path_factory.mktemp("onnx") / "shape.onnx",
                       dynamic_shape=True)


@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_matches_pytorch(batch_onnx, tiny_model, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, 64, 64)).astype(np.float32)
    out = session(batch_onnx).run(None, {"image": x})[0]
    assert out.shape == (batch, 1, 64, 64) and out.dtype == np.float32
    assert np.abs(out - reference(tiny_model, x)).max() <= 1e-4


def test_dynamic_shape_non_square_matches_pytorch(shape_onnx, tiny_model):
    x = np.random.default_rng(7).standard_normal((2, 3, 96, 64)).astype(np.float32)
    out = session(shape_onnx).run(None, {"image": x})[0]
    assert out.shape == (2, 1, 96, 64)
    assert np.abs(out - reference(tiny_model, x)).max() <= 1e-4


def test_declared_io(batch_onnx, shape_onnx):
    fixed, free = session(batch_onnx), session(shape_onnx)
    assert [(i.name, i.type, i.shape) for i in fixed.get_inputs()] == [
        ("image", "tensor(float)", ["batch", 3, 64, 64])]
    assert [(o.name, o.shape) for o in fixed.get_outputs()] == [
        ("probability", ["batch", 1, 64, 64])]
    assert free.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    assert free.get_outputs()[0].shape == ["batch", 1, "height", "width"]


def test_metadata_round_trips(batch_onnx, tiny_checkpoint, tiny_config):
    from cflnet_sdk import __version__
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.onnx import read_metadata
    from cflnet_sdk.fileio import sha256_file
    from cflnet_sdk.metadata import (
        CONFIG_KEY,
        CONTRACT_KEY,
        PRECISION_KEY,
        SOURCE_SHA256_KEY,
        VERSION_KEY,
    )
    from cflnet_sdk.training.config import CFLNetConfig

    meta = session(batch_onnx).get_modelmeta().custom_metadata_map
    assert meta == read_metadata(batch_onnx)
    assert Contract.from_json(meta[CONTRACT_KEY]) == Contract(height=64, width=64)
    assert CFLNetConfig.from_json(meta[CONFIG_KEY]) == tiny_config
    assert meta[SOURCE_SHA256_KEY] == sha256_file(tiny_checkpoint)
    assert meta[VERSION_KEY] == __version__
    assert meta[PRECISION_KEY] == "fp32"


def test_in_memory_export_has_empty_source_hash(shape_onnx):
    from cflnet_sdk.export.onnx import read_metadata
    from cflnet_sdk.metadata import SOURCE_SHA256_KEY

    assert read_metadata(shape_onnx)[SOURCE_SHA256_KEY] == ""


def test_single_file_without_projection_head(batch_onnx, tiny_model):
    import onnx

    from cflnet_sdk.training.model import CFLNetInference

    proto = onnx.load(str(batch_onnx))
    onnx.checker.check_model(proto, full_check=True)
    assert list(batch_onnx.parent.glob("*.data")) == []
    assert all(not t.HasField("data_location") or t.data_location == onnx.TensorProto.DEFAULT
               for t in proto.graph.initializer)
    shapes = {tuple(t.dims) for t in proto.graph.initializer}
    head = tiny_model.projection[2].weight
    assert tuple(head.shape) not in shapes  # (embedding_dim, aspp_channels, 1, 1)
    assert not any("projection" in t.name for t in proto.graph.initializer)
    stored = sum(int(np.prod(t.dims)) for t in proto.graph.initializer)
    deployable = sum(p.numel() for p in CFLNetInference(tiny_model).parameters())
    assert stored <= deployable  # BN folding only removes values; the head would add 18k+


def test_size_override_sets_contract_and_static_input(tiny_model, tmp_path):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.onnx import export_onnx, read_metadata

    path = export_onnx(tiny_model, tmp_path / "s.onnx", size=(96, 64), dynamic_batch=False,
                       simplify=False)
    assert session(path).get_inputs()[0].shape == [1, 3, 96, 64]
    assert Contract.from_json(read_metadata(path)["cflnet.contract"]).size == (96, 64)
    assert tiny_model.training is False  # the caller's model is left as it was


def test_missing_checkpoint_names_the_file(tmp_path):
    from cflnet_sdk.errors import ModelFileError
    from cflnet_sdk.export.onnx import export_onnx

    missing = tmp_path / "nope.safetensors"
    with pytest.raises(ModelFileError, match=r"nope\.safetensors: no such checkpoint"):
        export_onnx(missing, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_foreign_safetensors_is_refused(tmp_path, torch_threads):
    from safetensors.torch import save_file

    from cflnet_sdk.errors import ModelFileError
    from cflnet_sdk.export.onnx import export_onnx

    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch_threads.zeros(2)}, str(foreign))
    with pytest.raises(ModelFileError, match=r"other\.safetensors: .*not a cflnet-sdk checkpoint"):
        export_onnx(foreign, tmp_path / "x.onnx")


def test_bad_size_is_a_config_error(tiny_model, tmp_path):
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.export.onnx import export_onnx

    with pytest.raises(ConfigError, match="multiples of 32"):
        export_onnx(tiny_model, tmp_path / "x.onnx", size=100)


def test_unreadable_onnx_names_the_file(tmp_path):
    from cflnet_sdk.errors import ModelFileError
    from cflnet_sdk.export.onnx import read_metadata

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ModelFileError, match=r"bad\.onnx: not a readable ONNX model"):
        read_metadata(bad)


def test_export_contract_overrides_and_drops_an_operating_point_the_maps_no_longer_match():
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.onnx import export_contract

    calibrated = Contract(mode="tile", decision_threshold=0.9, false_alarm_rate=0.05,
                          copy_move_threshold=0.5)
    assert export_contract(calibrated, None) == calibrated
    assert export_contract(calibrated, 256, "tile", 64) == calibrated  # nothing changes
    faster = export_contract(calibrated, None, tile_overlap=32)
    assert faster.tile_overlap == 32 and faster.decision_threshold is None
    assert faster.copy_move_threshold is None and faster.false_alarm_rate is None
    assert export_contract(calibrated, 128).size == (128, 128)
