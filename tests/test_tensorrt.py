"""TensorRT: header compatibility rules and build planning (no TensorRT needed), real builds
where ``tensorrt`` and a GPU exist."""

from __future__ import annotations

import pytest

from cflnet_sdk.engine_file import check_engine_header, read_engine, write_engine
from cflnet_sdk.errors import BackendUnavailableError, ConfigError, EngineCompatibilityError

HEADER = {"tensorrt_version": "10.3.0.26", "compute_capability": "8.7", "gpu_name": "Orin",
          "hardware_compat": "same", "version_compatible": False}


def test_same_release_and_gpu_is_accepted():
    check_engine_header(HEADER, "10.3.0.30", ("Orin", "8.7"))
    check_engine_header(HEADER, "10.3.0", None)  # GPU unknown: only the version is checked


def test_other_tensorrt_release_is_refused_naming_the_file():
    with pytest.raises(EngineCompatibilityError,
                       match=r"m\.engine: engine built with TensorRT 10\.3\.0\.26, this machine "
                             r"has TensorRT 10\.8\.0.*rebuild"):
        check_engine_header(HEADER, "10.8.0", ("Orin", "8.7"), path="m.engine")
    with pytest.raises(EngineCompatibilityError, match=r"11\.0\.0"):
        check_engine_header(HEADER, "11.0.0", ("Orin", "8.7"))


def test_version_compatible_runs_on_later_same_major_only():
    header = {**HEADER, "version_compatible": True}
    check_engine_header(header, "10.8.0", ("Orin", "8.7"))
    for version in ("10.2.0", "11.0.0"):
        with pytest.raises(EngineCompatibilityError, match="version-compatible"):
            check_engine_header(header, version, ("Orin", "8.7"))


def test_gpu_rules():
    with pytest.raises(EngineCompatibilityError, match=r"compute capability 8\.7.*8\.9"):
        check_engine_header(HEADER, "10.3.0", ("NVIDIA L4", "8.9"))
    ampere = {**HEADER, "hardware_compat": "ampere+"}
    check_engine_header(ampere, "10.3.0", ("NVIDIA H100", "9.0"))
    with pytest.raises(EngineCompatibilityError, match="Ampere"):
        check_engine_header(ampere, "10.3.0", ("Tesla T4", "7.5"))


def test_header_without_version_is_a_model_file_error():
    from cflnet_sdk.errors import ModelFileError

    with pytest.raises(ModelFileError, match="lacks tensorrt_version"):
        check_engine_header({"compute_capability": "8.7"}, "10.3.0", None, "x.engine")


@pytest.fixture(scope="module")
def summary(tiny_model, tmp_path_factory):
    """What the builder reads from a static 64x64 export of the small model."""
    from cflnet_sdk.export.onnx import export_onnx
    from cflnet_sdk.export.tensorrt import read_onnx_summary

    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    return read_onnx_summary(export_onnx(tiny_model, path, size=64, simplify=False))


def test_export_header_contract_is_what_the_runtime_reads(summary, tmp_path):
    from cflnet_sdk.engine_file import engine_contract
    from cflnet_sdk.export.tensorrt import BuildOptions, engine_header, profile_shapes, typing_plan

    options = BuildOptions()
    header = engine_header(summary, typing_plan(10, "fp32", options),
                           profile_shapes(summary, options), options, "10.3.0", ("Orin", "8.7"))
    path = write_engine(tmp_path / "m.engine", b"plan", header)
    read_header, _ = read_engine(path)
    assert engine_contract(read_header, path) == summary.contract
    check_engine_header(read_header, "10.3.0", ("Orin", "8.7"), path)
    assert read_header["tf32"] is False  # an fp32 engine computes in fp32 unless asked
    asked = BuildOptions(tf32=True)
    assert engine_header(summary, typing_plan(11, "fp32", asked), profile_shapes(
        summary, asked), asked, "11.4.0", ("H200", "9.0"))["tf32"] is True


def test_engine_file_round_trip(tmp_path):
    path = write_engine(tmp_path / "m.engine", b"PLAN", HEADER)
    assert read_engine(path) == (HEADER, b"PLAN")


def test_typing_plan_per_major_version():
    from cflnet_sdk.export.tensorrt import BuildOptions, typing_plan

    assert typing_plan(10, "fp32", BuildOptions(fp16=True)).flags == ("FP16",)
    assert typing_plan(10, "fp32", BuildOptions()).strongly_typed is False
    assert typing_plan(10, "fp16", BuildOptions()).strongly_typed is True
    plan = typing_plan(11, "int8", BuildOptions())
    assert (plan.strongly_typed, plan.flags, plan.precision) == (True, (), "int8")
    with pytest.raises(ConfigError, match=r"TensorRT 11 has no --fp16.*--precision fp16"):
        typing_plan(11, "fp32", BuildOptions(fp16=True))
    with pytest.raises(ConfigError, match="Q/DQ ONNX"):
        typing_plan(10, "fp32", BuildOptions(int8=True))
    with pytest.raises(ConfigError, match="DLA runs FP16 or INT8"):
        typing_plan(10, "fp32", BuildOptions(dla_core=0))


def test_profile_shapes(summary):
    from cflnet_sdk.export.tensorrt import BuildOptions, parse_shape, profile_shapes

    assert profile_shapes(summary, BuildOptions()) == (
        (1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))
    with pytest.raises(ConfigError, match="fixed dimension 2 = 64"):
        profile_shapes(summary, BuildOptions(max_shape=parse_shape("8x3x128x128")))
    with pytest.raises(ConfigError, match="NxCxHxW"):
        parse_shape("8x256x256")


def test_missing_tensorrt_gives_install_hint(tiny_model, tmp_path):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorrt is installed here")
    from cflnet_sdk.export.onnx import export_onnx
    from cflnet_sdk.export.tensorrt import build_engine

    path = export_onnx(tiny_model, tmp_path / "m.onnx", size=64, simplify=False)
    with pytest.raises(BackendUnavailableError, match=r"pip install cflnet-sdk\[tensorrt\]"):
        build_engine(path, tmp_path / "m.engine")


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_and_run_engine(tiny_model, tmp_path, precision):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install "
                                                 "cflnet-sdk[tensorrt] on a machine with a GPU)")
    import numpy as np

    from cflnet_sdk.export.onnx import build_onnx, save_onnx
    from cflnet_sdk.export.parity import compare, engine_runner, random_probes, torch_runner
    from cflnet_sdk.export.precision import make_variant
    from cflnet_sdk.export.tensorrt import BuildOptions, build_engine, gpu_identity

    onnx_path = save_onnx(make_variant(build_onnx(tiny_model, size=64), precision),
                          tmp_path / "m.onnx")
    engine = build_engine(onnx_path, tmp_path / "m.engine",
                          BuildOptions(timing_cache=tmp_path / "cache.bin"))
    header, plan = read_engine(engine)
    assert header["tensorrt_version"] == trt.__version__ and plan
    assert header["compute_capability"] == gpu_identity()[1]
    assert header["precision"] == precision and (tmp_path / "cache.bin").stat().st_size > 0
    from cflnet_sdk.contract import Contract

    result = compare(torch_runner(tiny_model), engine_runner(engine),
                     random_probes(Contract(64, 64), batch=2), 0.5,
                     atol={"fp32": 1e-3, "fp16": 1e-2}[precision])
    assert result.passed and np.isfinite(result.max_abs)


@pytest.mark.gpu
def test_version_compatible_engine_loads_in_the_runtime(tiny_model, tmp_path):
    """Its plan embeds TensorRT's lean runtime, which loads only where host code is allowed."""
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (pip install "
                                           "cflnet-sdk[tensorrt] on a machine with a GPU)")
    import numpy as np

    from cflnet_sdk import Localizer
    from cflnet_sdk.export.onnx import export_onnx
    from cflnet_sdk.export.tensorrt import BuildOptions, build_engine

    onnx_path = export_onnx(tiny_model, tmp_path / "m.onnx", size=64, simplify=False)
    engine = build_engine(onnx_path, tmp_path / "m.engine", BuildOptions(version_compatible=True))
    assert read_engine(engine)[0]["version_compatible"] is True
    probability = Localizer(engine).predict(np.zeros((64, 64, 3), np.uint8)).probability
    assert probability.shape == (64, 64) and np.isfinite(probability).all()
