"""Precision variants carried in the ONNX graph itself: FP16 and INT8 (explicit Q/DQ).

TensorRT 11 removed the FP16/INT8 builder flags and the calibrator: a strongly typed network
takes its precision from the ONNX. TensorRT 10 builds the same files, and ONNX Runtime runs
them on the CPU, which is how their accuracy cost is measured here.

Both variants keep float32 input and output, and keep the tail of the network (logit
difference, upsampling to the input size, sigmoid) in float32: that part is cheap, and it is
where half precision or 8-bit steps would show directly in the probability map.
"""

from __future__ import annotations

import contextlib
import importlib.util
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import BackendUnavailableError, ConfigError
from cflnet_sdk.metadata import (
    CONTRACT_KEY,
    INPUT_NAME,
    INT8_TARGET_KEY,
    PRECISION_KEY,
    WEIGHTS_KEY,
)

if TYPE_CHECKING:
    import onnx

    from cflnet_sdk.export.calibration import Calibration

Precision = Literal["fp32", "fp16", "int8"]
Int8Target = Literal["tensorrt", "cpu"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
INT8_TARGETS: tuple[str, ...] = ("tensorrt", "cpu")
ORT_HINT = "install ONNX Runtime: `pip install cflnet-sdk[cpu]` (or `[gpu]`)"


def require_onnxruntime() -> None:
    """Raise BackendUnavailableError with the install hint when onnxruntime is missing."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f"precision variants need onnxruntime: {ORT_HINT}") from exc


def float32_tail(proto: onnx.ModelProto) -> list[str]:
    """Names of the nodes between the last convolutions and the output.

    Walks producers backwards from the graph output and stops at Conv nodes, so the logit
    difference, the final Resize and the Sigmoid are found whatever the exporter named them.
    """
    producer = {out: node for node in proto.graph.node for out in node.output}
    tail: list[str] = []
    pending = [o.name for o in proto.graph.output]
    seen: set[str] = set()
    while pending:
        node = producer.get(pending.pop())
        if node is None or node.name in seen or node.op_type == "Conv":
            continue
        seen.add(node.name)
        tail.append(node.name)
        pending.extend(node.input)
    return tail


def name_nodes(proto: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (block lists and quantizers select by name)."""
    used = {node.name for node in proto.graph.node}
    for index, node in enumerate(proto.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
            while node.name in used:
                node.name += "_"
            used.add(node.name)


def sort_topologically(proto: onnx.ModelProto) -> None:
    """Reorder nodes so each comes after its producers (the fp16 converter appends casts)."""
    nodes = list(proto.graph.node)
    ready = {i.name for i in proto.graph.input} | {t.name for t in proto.graph.initializer}
    ready.add("")  # an omitted optional input
    ordered: list = []
    while nodes:
        waiting = []
        for node in nodes:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(nodes):
            raise ConfigError("the graph has a cycle or an input nobody produces: "
                              f"{waiting[0].name} ({waiting[0].op_type})")
        nodes = waiting
    del proto.graph.node[:]
    proto.graph.node.extend(ordered)


def drop_round_trip_casts(proto: onnx.ModelProto) -> int:
    """Remove float32 -> float16 -> float32 cast pairs; returns how many were removed.

    The converter casts every blocked node's output to fp16 and back when the next node is
    blocked too, which would round the float32 tail to half precision anyway.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    elem = {v.name: v.type.tensor_type.elem_type for v in (
        *inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output)}
    producer = {out: node for node in proto.graph.node for out in node.output}

    def cast_to(node: onnx.NodeProto | None) -> int | None:
        if node is None or node.op_type != "Cast":
            return None
        return next(a.i for a in node.attribute if a.name == "to")

    removed = 0
    for node in proto.graph.node:
        first = producer.get(node.input[0]) if node.input else None
        if (cast_to(node) == onnx.TensorProto.FLOAT and cast_to(first) == onnx.TensorProto.FLOAT16
                and elem.get(first.input[0]) == onnx.TensorProto.FLOAT):
            node.op_type, node.input[0] = "Identity", first.input[0]
            del node.attribute[:]
            removed += 1
    remove_dead_nodes(proto)
    return removed


def remove_dead_nodes(proto: onnx.ModelProto) -> None:
    """Drop nodes none of whose outputs are used by another node or the graph output."""
    while True:
        used = {name for node in proto.graph.node for name in node.input}
        used |= {o.name for o in proto.graph.output}
        live = [n for n in proto.graph.node if any(out in used for out in n.output)]
        if len(live) == len(proto.graph.node):
            return
        del proto.graph.node[:]
        proto.graph.node.extend(live)


def convert_fp16(proto: onnx.ModelProto, simplify: bool = True) -> onnx.ModelProto:
    """FP16 weights and compute with float32 I/O and a float32 tail (onnxruntime's converter).

    With ``simplify``, onnxslim then folds the converter's casts where it is installed: a
    tidy-up, not a need, so an fp16 export works without it (as an fp32 one does with
    ``--no-simplify``).
    """
    require_onnxruntime()
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    name_nodes(proto)
    half = convert_float_to_float16(proto, keep_io_types=True,
                                    op_block_list=list(DEFAULT_OP_BLOCK_LIST),
                                    node_block_list=float32_tail(proto))
    sort_topologically(half)
    drop_round_trip_casts(half)
    if not simplify or importlib.util.find_spec("onnxslim") is None:
        return half
    from cflnet_sdk.export.onnx import simplify_graph

    return simplify_graph(half)


# -- INT8 -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Int8Layout:
    """How activations are quantized, and which layer groups stay float32 unless the recipe
    names others. Weights are always int8, symmetric, per output channel."""

    signed_activations: bool
    symmetric_activations: bool
    keep_float: tuple[str, ...]
    why: str


INT8_LAYOUTS = {
    "tensorrt": Int8Layout(True, True, ("inputs", "stems"),
                           "TensorRT's INT8 kernels are s8s8: symmetric int8 activations and "
                           "weights (zero point 0). Symmetric ranges spend a bit on the sign of "
                           "ReLU outputs, which have none, and the full-resolution stems then "
                           "lose too much: they stay float32 (docs/benchmarks.md)"),
    "cpu": Int8Layout(False, False, ("inputs",),
                      "ONNX Runtime's fast CPU path (VNNI/AMX) is u8s8: asymmetric uint8 "
                      "activations, int8 weights"),
}
# Convolutions carry the compute; Add is the residual join, which TensorRT fuses into the
# convolution when its other input is quantized too. Everything else stays float.
INT8_OPS = ("Conv", "Add")
# Layer groups that may be kept in float32: "inputs" is found from the weights' shapes (see
# input_convs), the others by the module scope the exporter writes into node names.
NAMED_GROUPS: dict[str, tuple[str, ...]] = {
    "srm_stem": ("/encoder_srm/conv1/",),  # the SRM trunk's stem: reads the noise residual
    "stems": ("/encoder/conv1/", "/encoder_srm/conv1/"),  # both trunks' stems
    "aspp": ("/aspp/",),
    "head": ("/decoder/",),  # segmentation head: its last conv gives the logits
}
FLOAT_GROUPS: tuple[str, ...] = ("inputs", *NAMED_GROUPS)
# No "entropy": through quantize_static ONNX Runtime's KL search has 128 histogram bins for 128
# quantized bins, i.e. one candidate range, the min/max one; a real 2048-bin search measured
# worse than both (docs/benchmarks.md, "INT8 attempts").
CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile")
INT8_METHOD_HELP = ("INT8 range calibration: minmax | percentile (default: what measured "
                    "best, docs/export.md).")
KEEP_FLOAT_HELP = ("INT8: layer groups kept in float32, comma-separated: inputs, srm_stem, "
                   "stems, aspp, head ('' for none; default: what measured best, "
                   "docs/export.md).")


@dataclass(frozen=True)
class Int8Recipe:
    """How activation ranges are calibrated and which layer groups stay float32 (beyond the
    float32 tail). The defaults are what measured best (docs/benchmarks.md, "INT8 attempts")."""

    method: str = "percentile"
    keep_float: tuple[str, ...] | None = None  # None: the INT8 layout's own (INT8_LAYOUTS)
    per_channel: bool = True
    keep_nodes: tuple[str, ...] = ()  # single nodes kept in float32, by name (sensitivity runs)

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ConfigError(f"calibration method {self.method!r} is not one of "
                              f"{', '.join(CALIBRATION_METHODS)}")
        if unknown := [g for g in self.keep_float or () if g not in FLOAT_GROUPS]:
            raise ConfigError(f"layer group(s) {', '.join(unknown)} unknown; keep any of "
                              f"{', '.join(FLOAT_GROUPS)} in float32")

    @classmethod
    def parse(cls, method: str | None = None, keep_float: str | None = None) -> Int8Recipe:
        """The recipe from command-line text (groups comma-separated); None keeps a default."""
        groups = None if keep_float is None else tuple(
            part.strip() for part in keep_float.split(",") if part.strip())
        return cls(method=method or cls.method, keep_float=groups)

    def groups(self, target: str) -> tuple[str, ...]:
        """The layer groups kept float32 for an INT8 layout."""
        return INT8_LAYOUTS[target].keep_float if self.keep_float is None else self.keep_float


def input_convs(proto: onnx.ModelProto) -> list[str]:
    """Convolutions with no more input channels than the image: those that read the image (the
    RGB stem's first, the SRM filter) and the SRM residual. Quantizing the image to 8 bits on a
    grid that is not the pixel grid adds about a grey level of noise, which the SRM residual
    amplifies; and with 3-6 input channels INT8 saves next to nothing there."""
    channels = proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    weights = {t.name: t.dims for t in proto.graph.initializer}
    return [n.name for n in proto.graph.node if n.op_type == "Conv"
            and all(a.i == 1 for a in n.attribute if a.name == "group")
            and len(weights.get(n.input[1], ())) == 4 and weights[n.input[1]][1] <= channels]


def float_nodes(proto: onnx.ModelProto, groups: Sequence[str]) -> list[str]:
    """Names of the nodes in the given layer groups; a group that matches nothing is an error
    (a graph from another exporter has other names, and silently quantizing it would lie)."""
    names: list[str] = []
    for group in groups:
        found = input_convs(proto) if group == "inputs" else [
            n.name for n in proto.graph.node if n.name.startswith(NAMED_GROUPS[group])]
        if not found:
            raise ConfigError(f"layer group {group!r} matches no convolution of this graph: "
                              "export the model with `cflnet-export onnx`, whose node names "
                              "carry the module names")
        names += found
    return names


def store_weights_fp16(proto: onnx.ModelProto, min_elements: int = 1024) -> onnx.ModelProto:
    """Halve the file by storing large float32 weights as float16, each behind a Cast back.

    Compute stays float32: ONNX Runtime and TensorRT fold ``Cast(initializer)`` into a float32
    constant when they load the model, so only the weights' rounding to half changes results
    (checked by the export's verification), not the speed. Meant for shipping models.
    """
    import onnx
    from onnx import numpy_helper

    from cflnet_sdk.export.onnx import set_metadata

    graph = proto.graph
    casts, kept = [], []
    for tensor in graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT or _elements(tensor) < min_elements:
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16),
                                       f"{tensor.name}__fp16")
        kept.append(half)
        casts.append(onnx.helper.make_node("Cast", [half.name], [tensor.name],
                                           to=onnx.TensorProto.FLOAT,
                                           name=f"{tensor.name}__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    set_metadata(proto, {WEIGHTS_KEY: "float16"})
    return proto


def _elements(tensor: onnx.TensorProto) -> int:
    return int(np.prod(tensor.dims)) if tensor.dims else 1


class InputReader:
    """onnxruntime CalibrationDataReader over preprocessed batches (duck-typed protocol).

    ``set_range`` lets the calibrator take the batches a slice at a time (its
    ``CalibStridedMinMax`` option, which serves every method): the histogram methods otherwise
    hold every layer's activations for every input at once, gigabytes for a tile-mode model.
    """

    def __init__(self, batches: Sequence[np.ndarray], input_name: str = INPUT_NAME) -> None:
        self.batches, self.input_name = batches, input_name
        self._iter = iter(batches)

    def __len__(self) -> int:
        return len(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._iter = iter(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self.batches[start_index:end_index])


def calibration_stride(count: int, most: int = 16) -> int:
    """The largest slice of at most ``most`` inputs that divides ``count`` (the calibrator
    refuses a last slice of another size)."""
    return max(d for d in range(1, min(most, count) + 1) if count % d == 0)


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cflnet-quant-") as folder:
        yield Path(folder)


def quantize_int8(proto: onnx.ModelProto, batches: Iterable[np.ndarray],
                  target: Int8Target = "tensorrt", recipe: Int8Recipe = Int8Recipe()
                  ) -> onnx.ModelProto:
    """Static INT8 quantization to explicit Q/DQ, calibrated on ``batches`` by ``recipe``."""
    require_onnxruntime()
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if target not in INT8_LAYOUTS:
        raise ConfigError(f"INT8 target {target!r} is not one of {', '.join(INT8_TARGETS)}")
    layout = INT8_LAYOUTS[target]
    name_nodes(proto)
    excluded = float32_tail(proto) + float_nodes(proto, recipe.groups(target)) + \
        list(recipe.keep_nodes)
    method = {"minmax": CalibrationMethod.MinMax,
              "percentile": CalibrationMethod.Percentile}[recipe.method]
    reader = InputReader(list(batches))
    with scratch_dir() as folder, contextlib.redirect_stdout(None):  # histogram chatter
        source, prepared, output = folder / "fp32.onnx", folder / "prep.onnx", folder / "int8.onnx"
        onnx.save_model(proto, str(source))
        quant_pre_process(str(source), str(prepared), skip_optimization=True)
        quantize_static(
            str(prepared), str(output), reader,
            quant_format=QuantFormat.QDQ, per_channel=recipe.per_channel,
            activation_type=QuantType.QInt8 if layout.signed_activations else QuantType.QUInt8,
            weight_type=QuantType.QInt8, op_types_to_quantize=list(INT8_OPS),
            nodes_to_exclude=excluded, calibrate_method=method,
            extra_options={"ActivationSymmetric": layout.symmetric_activations,
                           "WeightSymmetric": True,
                           "CalibTensorRangeSymmetric": layout.symmetric_activations,
                           "CalibStridedMinMax": calibration_stride(len(reader))})
        return onnx.load(str(output))


def variant_metadata(source: onnx.ModelProto, precision: str,
                     target: str | None = None) -> dict[str, str]:
    """The source's metadata with the precision (and INT8 layout) of the variant."""
    metadata = {p.key: p.value for p in source.metadata_props}
    metadata[PRECISION_KEY] = precision
    if target:
        metadata[INT8_TARGET_KEY] = target
    return metadata


def make_variant(fp32: onnx.ModelProto, precision: Precision, *,
                 calibration: Calibration | None = None, int8_target: Int8Target = "tensorrt",
                 recipe: Int8Recipe = Int8Recipe(), simplify: bool = True) -> onnx.ModelProto:
    """The ``precision`` variant of an exported fp32 model, with its metadata carried over.

    ``simplify``: run onnxslim on an fp16 variant (where installed). INT8 calibrates on
    ``calibration`` (default: 64 packaged photos with synthetic edits).
    """
    from cflnet_sdk.export.calibration import collect_calibration
    from cflnet_sdk.export.onnx import set_metadata

    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return fp32
    metadata = variant_metadata(fp32, precision, int8_target if precision == "int8" else None)
    if precision == "fp16":
        variant = convert_fp16(fp32, simplify)
    else:
        calibration = calibration or collect_calibration(
            Contract.from_json(metadata[CONTRACT_KEY]))
        variant = quantize_int8(fp32, calibration.inputs, int8_target, recipe)
    variant.producer_name, variant.producer_version = fp32.producer_name, fp32.producer_version
    set_metadata(variant, metadata)
    return variant
