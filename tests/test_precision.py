"""FP16 and INT8 (Q/DQ) variants: structure, metadata, and their measured accuracy cost."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="precision variants are built and run with onnxruntime")
pytest.importorskip("onnxslim", reason="the exporter simplifies with onnxslim (export extra)")

HELD_OUT = 12
# Bounds on |AUC(variant) - AUC(fp32)| on the held-out set for the small untrained test model.
# Its probability maps are nearly flat (no training), so 8-bit steps move the ranking of
# pixels far more than they would for a trained network; docs/export.md gives the figures.
FP16_AUC_BOUND = 0.002
INT8_AUC_BOUND = 0.1


@pytest.fixture(scope="module")
def fp32(tiny_model):
    from cflnet_sdk.export.onnx import build_onnx

    return build_onnx(tiny_model, size=64)


@pytest.fixture(scope="module")
def variants(fp32, tmp_path_factory):
    import onnx

    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.calibration import collect_calibration
    from cflnet_sdk.export.onnx import save_onnx
    from cflnet_sdk.export.precision import make_variant

    folder = tmp_path_factory.mktemp("variants")
    paths = {"fp32": save_onnx(fp32, folder / "fp32.onnx")}
    calibration = collect_calibration(Contract(64, 64), None, 16)
    for name, precision, target in (("fp16", "fp16", "tensorrt"), ("int8", "int8", "tensorrt"),
                                    ("int8-cpu", "int8", "cpu")):
        copy = onnx.ModelProto()
        copy.CopyFrom(fp32)
        variant = make_variant(copy, precision, calibration=calibration, int8_target=target)
        paths[name] = save_onnx(variant, folder / f"{name}.onnx")
    return paths


@pytest.fixture(scope="module")
def held_out():
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.parity import held_out_probes

    return held_out_probes(Contract(height=64, width=64), HELD_OUT)


def run(path, probes) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [sess.run(None, {"image": x})[0] for x in probes.inputs]


def held_out_auc_diff(variants, held_out, name) -> tuple[float, float]:
    from cflnet_sdk.export.parity import figures

    result = figures(held_out, run(variants["fp32"], held_out), run(variants[name], held_out),
                     0.5)
    print(f"{name}: {result.line()}")  # the measured figure, shown with -s
    return result.auc_diff, result.max_abs


def test_variants_keep_float32_io_and_metadata(variants):
    import onnxruntime as ort

    from cflnet_sdk.export.onnx import read_metadata

    source = read_metadata(variants["fp32"])
    for name, precision in (("fp16", "fp16"), ("int8", "int8"), ("int8-cpu", "int8")):
        sess = ort.InferenceSession(str(variants[name]), providers=["CPUExecutionProvider"])
        assert [i.type for i in sess.get_inputs()] == ["tensor(float)"]
        assert [o.type for o in sess.get_outputs()] == ["tensor(float)"]
        meta = sess.get_modelmeta().custom_metadata_map
        assert meta["cflnet.precision"] == precision
        assert meta["cflnet.contract"] == source["cflnet.contract"]
        assert meta["cflnet.config"] == source["cflnet.config"]
    assert read_metadata(variants["int8"])["cflnet.int8_target"] == "tensorrt"
    assert read_metadata(variants["int8-cpu"])["cflnet.int8_target"] == "cpu"


def test_fp16_graph_has_half_weights_and_float32_tail(variants):
    import onnx

    proto = onnx.load(str(variants["fp16"]))
    types = {t.data_type for t in proto.graph.initializer if len(t.dims) == 4}
    assert types == {onnx.TensorProto.FLOAT16}
    sigmoid = next(n for n in proto.graph.node if n.op_type == "Sigmoid")
    inferred = onnx.shape_inference.infer_shapes(proto)
    elem = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    assert elem[sigmoid.input[0]] == onnx.TensorProto.FLOAT  # the tail never rounds to fp16


def test_int8_layouts(variants):
    import onnx
    from onnx import numpy_helper

    for name, zero_type in (("int8", onnx.TensorProto.INT8), ("int8-cpu", onnx.TensorProto.UINT8)):
        proto = onnx.load(str(variants[name]))
        inits = {t.name: t for t in proto.graph.initializer}
        quantize = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
        assert quantize, name
        zero_points = [inits[n.input[2]] for n in quantize]
        assert {z.data_type for z in zero_points} == {zero_type}
        if name == "int8":  # TensorRT: symmetric activations, zero point 0
            assert all(not numpy_helper.to_array(z).any() for z in zero_points)
        weights = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"
                   and inits.get(n.input[0]) is not None and len(inits[n.input[0]].dims) == 4]
        assert weights and all(inits[n.input[0]].data_type == onnx.TensorProto.INT8
                               for n in weights)
        assert all(numpy_helper.to_array(inits[n.input[1]]).ndim == 1 for n in weights)
        assert next(n for n in proto.graph.node if n.op_type == "Sigmoid").input[0] not in {
            out for n in proto.graph.node if n.op_type == "DequantizeLinear" for out in n.output}


def test_fp16_accuracy_cost_is_bounded(variants, held_out):
    auc_diff, max_abs = held_out_auc_diff(variants, held_out, "fp16")
    assert abs(auc_diff) <= FP16_AUC_BOUND
    assert max_abs <= 1e-2


@pytest.mark.parametrize("name", ["int8", "int8-cpu"])
def test_int8_accuracy_cost_is_bounded(variants, held_out, name):
    auc_diff, max_abs = held_out_auc_diff(variants, held_out, name)
    assert abs(auc_diff) <= INT8_AUC_BOUND
    assert max_abs <= 0.1


def test_calibration_folder_errors(tmp_path):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.errors import DataError
    from cflnet_sdk.export.calibration import collect_calibration

    with pytest.raises(DataError, match="calibration folder does not exist"):
        collect_calibration(Contract(64, 64), tmp_path / "missing")
    with pytest.raises(DataError, match="no photos"):
        collect_calibration(Contract(64, 64), tmp_path)


def test_calibration_folder_uses_contract_preprocessing(photo_files):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.calibration import collect_calibration
    from cflnet_sdk.images import load_image

    contract = Contract(64, 96)
    inputs = collect_calibration(contract, photo_files["jpeg"].parent, count=2).inputs
    assert [x.shape for x in inputs] == [(1, 3, 64, 96)] * 2
    first = sorted(photo_files["jpeg"].parent.iterdir())[0]
    np.testing.assert_array_equal(inputs[0][0], contract.preprocess(load_image(first)))


def test_unknown_precision_is_a_config_error(fp32):
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.export.precision import make_variant

    with pytest.raises(ConfigError, match="precision 'bf8'"):
        make_variant(fp32, "bf8")  # type: ignore[arg-type]


def test_fp16_weight_storage_halves_the_file_and_keeps_fp32_compute(tiny_model, tmp_path):
    import onnx
    import onnxruntime as ort

    from cflnet_sdk.export.onnx import build_onnx, save_onnx
    from cflnet_sdk.export.precision import store_weights_fp16
    from cflnet_sdk.metadata import PRECISION_KEY, WEIGHTS_KEY

    full = save_onnx(build_onnx(tiny_model, size=64), tmp_path / "full.onnx")
    half = save_onnx(store_weights_fp16(build_onnx(tiny_model, size=64)), tmp_path / "half.onnx")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    proto = onnx.load(str(half))
    onnx.checker.check_model(proto)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta[WEIGHTS_KEY] == "float16" and meta[PRECISION_KEY] == "fp32"
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    a, b = (ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None,
            {"image": x})[0] for p in (full, half))
    assert b.dtype == np.float32
    assert np.abs(a - b).max() < 2e-3


def test_int8_recipe_keeps_the_chosen_layer_groups_in_float32(fp32):
    import onnx

    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.calibration import collect_calibration
    from cflnet_sdk.export.precision import Int8Recipe, quantize_int8

    copy = onnx.ModelProto()
    copy.CopyFrom(fp32)
    inputs = collect_calibration(Contract(64, 64), None, 4).inputs
    proto = quantize_int8(copy, inputs, "cpu", Int8Recipe("percentile", ("inputs", "head")))
    dequantized = {out for n in proto.graph.node if n.op_type == "DequantizeLinear"
                   for out in n.output}
    convs = {n.name: n for n in proto.graph.node if n.op_type == "Conv"}
    kept = [name for name in convs if name.startswith(("/encoder/conv1/", "/conv_srm/",
                                                       "/encoder_srm/conv1/", "/decoder/"))]
    assert len(kept) == 5  # the convolutions of 3 input channels, the head's two
    for name, node in convs.items():
        assert (node.input[1] not in dequantized) == (name in kept), name


def test_int8_recipe_refuses_unknown_methods_and_groups(fp32):
    from cflnet_sdk.errors import ConfigError
    from cflnet_sdk.export.precision import Int8Recipe, float_nodes

    with pytest.raises(ConfigError, match="'entropy' is not one of minmax, percentile"):
        Int8Recipe(method="entropy")
    with pytest.raises(ConfigError, match="neck"):
        Int8Recipe(keep_float=("neck",))
    assert float_nodes(fp32, ("inputs",)) == ["/encoder/conv1/Conv", "/conv_srm/Conv",
                                              "/encoder_srm/conv1/Conv"]


def test_int8_files_are_judged_by_masks_and_auc_not_max_error():
    from cflnet_sdk.export.parity import Figures, judge_int8

    close = Figures("photos", 4, max_abs=0.4, mean_abs=0.01, mask_iou=0.92, auc_reference=0.80,
                    auc_candidate=0.805, passed=False)
    assert judge_int8(close).passed, "a large single-pixel error alone must not fail INT8"
    assert not judge_int8(replace(close, mask_iou=0.7)).passed
    assert not judge_int8(replace(close, auc_candidate=0.78)).passed
    assert judge_int8(replace(close, auc_reference=None, auc_candidate=None)).passed
