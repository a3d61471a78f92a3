"""Python-backend repositories and ensembles: configs parse with Triton's ModelConfig protobuf,
and the server-side pipeline answers each request of a batch on its own (no server needed)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo_array

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2",
    reason="parsing config.pbtxt needs `pip install tritonclient[grpc]`")


def parse(path):
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def default_model():
    from cflnet_sdk.default_model import require_default_model

    return require_default_model()


def test_python_repository_is_self_contained(default_model, tmp_path):
    from cflnet_sdk.serving.repository import PythonModelOptions, write_python_repository

    target = write_python_repository(default_model, tmp_path, PythonModelOptions(
        name="forgery", max_batch=4, instances=2, max_queue=10, output="mask", mode="tile"))
    config = parse(target / "config.pbtxt")
    assert config.name == "forgery" and config.backend == "python"
    assert config.max_batch_size == 4
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == \
        [("image_bytes", model_config_pb2.TYPE_STRING, [1])]
    assert [(o.name, list(o.dims)) for o in config.output] == \
        [("mask_png", [1]), ("score", [1]), ("size", [2])]
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 10
    assert config.instance_group[0].count == 2
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["cflnet.role"] == "localizer" and params["cflnet.mode"] == "tile"
    version = target / "1"
    assert (version / default_model.name).read_bytes() == default_model.read_bytes()
    for module in ("model.py", "cflnet_sdk/localizer.py", "cflnet_sdk/serving/pipeline.py",
                   "cflnet_sdk/runtime/onnxruntime_backend.py"):
        assert (version / module).is_file(), module
    assert not (version / "cflnet_sdk" / "training").exists()


def test_unbatched_python_model_and_bad_options(default_model, tmp_path):
    from cflnet_sdk.errors import ConfigError, ModelFileError
    from cflnet_sdk.serving.repository import PythonModelOptions, write_python_repository

    config = parse(write_python_repository(default_model, tmp_path, PythonModelOptions(
        max_batch=0)) / "config.pbtxt")
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert list(config.output[0].dims) == [-1, -1]
    for bad in ({"output": "overlay"}, {"mode": "crop"}, {"name": "a/b"}, {"instances": 0}):
        with pytest.raises(ConfigError):
            PythonModelOptions(**bad)
    with pytest.raises(ModelFileError, match=r"weights\.bin: unknown model type"):
        (tmp_path / "weights.bin").write_bytes(b"x")
        write_python_repository(tmp_path / "weights.bin", tmp_path / "repo")


def test_ensemble_configs(default_model, tmp_path):
    pytest.importorskip("onnx", reason="the ensemble writer reads ONNX metadata (export extra)")
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.triton import TritonOptions
    from cflnet_sdk.export.triton_ensemble import write_ensemble_repository

    write_ensemble_repository(default_model, tmp_path, TritonOptions(max_batch=8), "mask")
    ensemble = parse(tmp_path / "cflnet" / "config.pbtxt")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 0
    steps = ensemble.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["cflnet_pre", "cflnet_model", "cflnet_copy_move",
                                             "cflnet_post"]
    assert dict(steps[1].input_map) == {"image": "model_input"}
    # the default model's verdict fuses copy-move evidence: analysed beside the model, fused last
    assert dict(steps[2].input_map) == {"image_bytes": "image_bytes"}
    assert set(steps[3].input_map) == {"model_output", "size", "copy_move", "copy_move_score"}
    assert [o.name for o in ensemble.output] == ["mask_png", "score", "size"]
    model = parse(tmp_path / "cflnet_model" / "config.pbtxt")
    assert model.platform == "onnxruntime_onnx" and model.max_batch_size == 8
    pre, post = (parse(tmp_path / f"cflnet_{s}" / "config.pbtxt") for s in ("pre", "post"))
    contract = Contract.from_json(pre.parameters["cflnet.contract"].string_value)
    assert list(pre.output[0].dims) == [-1, contract.channels, *contract.size]
    assert pre.parameters["cflnet.max_tiles"].string_value == "8"
    assert list(post.input[0].dims) == [-1, 1, *contract.size]
    assert [i.name for i in post.input] == ["model_output", "size", "copy_move",
                                            "copy_move_score"]
    copy_move = parse(tmp_path / "cflnet_copy_move" / "config.pbtxt")
    assert copy_move.parameters["cflnet.role"].string_value == "copy_move"
    assert (tmp_path / "cflnet_pre" / "1" / "model.py").is_file()


def test_one_bad_request_does_not_fail_its_batch(default_model):
    from cflnet_sdk import Localizer
    from cflnet_sdk.errors import ImageError
    from cflnet_sdk.serving import pipeline

    localizer = Localizer(default_model, device="cpu")
    good = [jpeg(photo_array("astronaut")[:150, :200]), jpeg(photo_array("coffee")[:150, :100])]
    big = jpeg(np.zeros((250, 240, 3), np.uint8))
    answers = pipeline.answer(localizer, [good[0], b"", b"junk", good[1], big], "probability",
                              max_pixels=50_000)
    assert [type(a).__name__ for a in answers] == ["dict", "ImageError", "ImageError", "dict",
                                                   "ImageError"]
    assert "over this server's limit" in str(answers[4])
    for payload, answer in zip(good, (answers[0], answers[3]), strict=True):
        expected = localizer.predict(payload)
        assert isinstance(answer, dict)
        np.testing.assert_array_equal(answer["probability"], expected.probability)
        assert list(answer["size"]) == list(expected.size)
    with pytest.raises(ImageError, match="one encoded image per request"):
        pipeline.payload_bytes(np.array([[b"a", b"b"]], dtype=object))


def test_serve_limit_matches_pipeline():
    import inspect

    from cflnet_sdk.commands.serve import serve
    from cflnet_sdk.serving.pipeline import MAX_PIXELS

    assert inspect.signature(serve).parameters["max_pixels"].default.default == MAX_PIXELS
