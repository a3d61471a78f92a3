"""The TensorRT backend on a real GPU: engine files, raw plans, profiles, threads, no torch.

These tests build a small engine from the tiny ONNX export with TensorRT's own ONNX parser and
run unchanged wherever tensorrt, cuda-python and an NVIDIA GPU exist (``pytest -m gpu``);
elsewhere they skip and say what is missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cflnet_sdk import Localizer
from cflnet_sdk.contract import Contract
from cflnet_sdk.engine_file import write_engine
from cflnet_sdk.errors import EngineCompatibilityError, ModelFileError
from cflnet_sdk.metadata import INPUT_NAME
from tests.conftest import photo_array
from tests.test_localizer import assert_threads_match_sequential, onnx_model

pytestmark = pytest.mark.gpu
TOLERANCE = 2e-3  # FP32 engine with TF32 off: cuDNN/cuBLAS kernels differ from the CPU's


def require_tensorrt():
    """The tensorrt module, or a skip naming exactly what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        pytest.skip("tensorrt is not installed (pip install 'cflnet-sdk[tensorrt]' on a machine "
                    "with an NVIDIA GPU); TensorRT tests skipped")
    try:
        from cflnet_sdk.runtime.tensorrt_backend import Cuda, import_cudart

        count = Cuda(import_cudart()).call(import_cudart().cudaGetDeviceCount(), "query")
    except Exception as exc:
        pytest.skip(f"no usable CUDA device for TensorRT ({exc})")
    if count < 1:
        pytest.skip("no CUDA device found; TensorRT tests skipped")
    return trt


def build_plan(onnx_path: Path, height: int, width: int, max_batch: int) -> bytes:
    """An FP32 plan with one optimisation profile: batch 1..max_batch at height x width."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10+
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise AssertionError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    if hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # compare FP32 with FP32
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, (1, 3, height, width), (max_batch, 3, height, width),
                      (max_batch, 3, height, width))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    assert plan is not None, "TensorRT failed to build the test engine"
    return bytes(plan)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory) -> Path:
    require_tensorrt()
    return onnx_model(tiny_checkpoint, tmp_path_factory)


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract(height=64, width=64)


@pytest.fixture(scope="module")
def raw_plan(tiny_onnx) -> bytes:
    return build_plan(tiny_onnx, 64, 64, max_batch=4)


def header(contract: Contract, tensorrt_version: str | None = None) -> dict:
    """An engine header as `cflnet-export engine` writes it, for GPU 0 of this machine."""
    import tensorrt as trt

    from cflnet_sdk.runtime.tensorrt_backend import Cuda, import_cudart

    name, capability = Cuda(import_cudart()).identity(0)
    return {"contract": json.loads(contract.to_json()), "gpu_name": name,
            "compute_capability": capability,
            "tensorrt_version": tensorrt_version or trt.__version__}


@pytest.fixture(scope="module")
def engine_file(raw_plan, contract, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("engines") / "tiny.engine"
    return write_engine(path, raw_plan, header(contract))


@pytest.fixture(scope="module")
def reference(tiny_onnx) -> Localizer:
    return Localizer(tiny_onnx, device="cpu")


def test_engine_matches_onnxruntime_on_real_images(engine_file, reference, photo_files):
    loc = Localizer(engine_file)
    assert loc.backend_name == "tensorrt" and loc.device == "cuda:0"
    assert loc.contract == reference.contract and loc.backend.max_batch == 4
    for path in photo_files.values():
        a, b = loc.predict(path), reference.predict(path)
        assert a.probability.shape == b.probability.shape
        assert np.abs(a.probability - b.probability).max() <= TOLERANCE
    loc.close()


def test_batches_larger_than_the_profile_are_split(engine_file, reference):
    loc = Localizer(engine_file)
    images = [photo_array(name)[::5, ::3] for name in
              ("astronaut", "chelsea", "coffee", "rocket", "camera", "hubble_deep_field")]
    batched = loc.predict_batch(images, batch_size=6)  # 4 + 2 on the GPU
    for image, pred in zip(images, batched, strict=True):
        assert np.abs(pred.probability - reference.predict(image).probability).max() <= TOLERANCE
    with pytest.raises(EngineCompatibilityError, match="optimisation profile"):
        loc.backend.run(np.zeros((5, 3, 64, 64), np.float32))


def test_contract_outside_the_profile_is_refused(engine_file):
    with pytest.raises(EngineCompatibilityError, match="rebuild the engine"):
        Localizer(engine_file, contract=Contract(height=96, width=96))


def test_raw_plan_needs_a_contract(raw_plan, contract, reference, photo_files, tmp_path):
    path = tmp_path / "model.plan"
    path.write_bytes(raw_plan)
    with pytest.raises(ModelFileError, match="contract="):
        Localizer(path)
    pred = Localizer(path, contract=contract).predict(photo_files["jpeg"])
    expected = reference.predict(photo_files["jpeg"]).probability
    assert np.abs(pred.probability - expected).max() <= TOLERANCE


def test_engine_from_another_release_is_refused_before_loading(raw_plan, contract, tmp_path):
    path = write_engine(tmp_path / "old.engine", raw_plan,
                        header(contract, "8.6.1"))
    with pytest.raises(EngineCompatibilityError, match=r"8\.6\.1"):
        Localizer(path)


def test_corrupt_plan_is_an_engine_error(contract, tmp_path):
    require_tensorrt()
    path = write_engine(tmp_path / "junk.engine", b"\x00" * 1024,
                        header(contract))
    with pytest.raises(EngineCompatibilityError, match="deserialise"):
        Localizer(path)


def test_threads_share_one_engine_safely(engine_file, photo_files):
    assert_threads_match_sequential(Localizer(engine_file))


def test_engine_path_never_imports_torch(engine_file, photo_files):
    code = ("import sys, json; sys.modules['torch'] = None\n"
            "from cflnet_sdk import Localizer\n"
            "pred = Localizer(sys.argv[1]).predict(sys.argv[2])\n"
            "print(json.dumps([list(pred.probability.shape), "
            "[m for m, v in sys.modules.items() if m.split('.')[0] == 'torch' and v]]))")
    out = subprocess.run([sys.executable, "-c", code, str(engine_file),
                          str(photo_files["jpeg"])], capture_output=True, text=True,
                         timeout=300, check=True)
    shape, torch_modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert shape == [512, 512] and torch_modules == []


def test_tile_mode_engine_matches_onnxruntime(request, tmp_path):
    require_tensorrt()  # before the export: without TensorRT this skips, whatever else is missing
    tile_onnx = request.getfixturevalue("tile_onnx")
    reference = Localizer(tile_onnx, device="cpu")
    plan = build_plan(tile_onnx, 128, 128, max_batch=16)
    engine = write_engine(tmp_path / "tile.engine", plan, header(reference.contract))
    loc = Localizer(engine)
    assert loc.mode == "tile" and loc.backend.max_batch == 16
    rgb = np.ascontiguousarray(photo_array("coffee")[:333, :500])
    a, b = loc.predict(rgb), reference.predict(rgb)
    assert a.probability.shape == (333, 500)
    assert np.abs(a.probability - b.probability).max() <= TOLERANCE
    loc.close()
