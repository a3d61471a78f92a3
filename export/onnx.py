"""Export the deployable network (no projection head) to one self-contained ONNX file.

The file carries the preprocessing contract, model config, SDK version, source checkpoint hash
and precision in ``metadata_props``, so every runtime reads the constants the model was trained
with. The legacy TorchScript exporter is used: for this network it gives a smaller graph that
ONNX Runtime runs faster than the dynamo exporter's (see docs/export.md, "Exporter choice").
"""

from __future__ import annotations

import io
import warnings
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from cflnet_sdk import __version__
from cflnet_sdk.contract import Contract, Mode
from cflnet_sdk.errors import ConfigError, ModelFileError
from cflnet_sdk.fileio import atomic_path, sha256_file
from cflnet_sdk.metadata import (
    CONFIG_KEY,
    CONTRACT_KEY,
    INPUT_NAME,
    OUTPUT_NAME,
    PRECISION_KEY,
    SOURCE_SHA256_KEY,
    VERSION_KEY,
)

if TYPE_CHECKING:
    import onnx

    from cflnet_sdk.training.model import CFLNet

Size = int | tuple[int, int]


def resolve_model(model: CFLNet | str | Path) -> tuple[CFLNet, str]:
    """A CFLNet in eval mode and the sha256 of its checkpoint ("" for an in-memory model)."""
    from cflnet_sdk.training.checkpoint import load_checkpoint

    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise ModelFileError("no such checkpoint file; pass a .safetensors written by "
                                 "`cflnet train` or `cflnet import-official`", path)
        return load_checkpoint(path), sha256_file(path)
    return model, ""


def cpu_float32(model: CFLNet) -> CFLNet:
    """``model`` itself if already on the CPU in float32, else a converted copy (the caller's
    model is never moved or cast)."""
    import copy

    import torch

    first = next(model.parameters())
    if first.device.type == "cpu" and first.dtype == torch.float32:
        return model
    return copy.deepcopy(model).float().cpu()


def export_contract(contract: Contract, size: Size | None, mode: Mode | None = None,
                    tile_overlap: int | None = None) -> Contract:
    """The model's contract with the export size, mode and tile overlap (each overrides the
    trained one). Any of them changes the maps, so a changed contract drops the operating
    point the checkpoint was calibrated at: calibrate the exported file anew."""
    exported = contract
    if mode is not None:
        exported = replace(exported, mode=mode)
    if tile_overlap is not None:
        exported = replace(exported, tile_overlap=tile_overlap)
    if size is not None:
        height, width = (size, size) if isinstance(size, int) else size
        exported = exported.with_size(int(height), int(width))
    return contract if exported == contract else exported.uncalibrated()


def file_metadata(model: CFLNet, contract: Contract, source_sha256: str,
                  precision: str = "fp32") -> dict[str, str]:
    """The ``metadata_props`` every cflnet ONNX file carries (names in cflnet_sdk.metadata)."""
    return {CONTRACT_KEY: contract.to_json(), CONFIG_KEY: model.config.to_json(),
            VERSION_KEY: __version__, SOURCE_SHA256_KEY: source_sha256, PRECISION_KEY: precision}


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, str]) -> None:
    """Replace ``metadata_props`` entries with ``metadata`` (other keys are kept)."""
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in metadata]
    del proto.metadata_props[:]
    for key, value in [*kept, *metadata.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | Path) -> dict[str, str]:
    """``metadata_props`` of an ONNX file as a dict."""
    return {p.key: p.value for p in load_onnx(path, load_weights=False).metadata_props}


def load_onnx(path: str | Path, load_weights: bool = True) -> onnx.ModelProto:
    """Load an ONNX file, turning any decoder error into a ModelFileError naming the file."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError("no such ONNX file; export one with `cflnet-export onnx`", path)
    try:
        return onnx.load(str(path), load_external_data=load_weights)
    except Exception as exc:  # protobuf raises DecodeError and others: any means unreadable
        raise ModelFileError(f"not a readable ONNX model ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); re-export it", path) from exc


def trace_to_onnx(network: object, contract: Contract, dynamic_batch: bool,
                  dynamic_shape: bool, opset: int) -> onnx.ModelProto:
    """Run the legacy TorchScript exporter into memory and return the model proto."""
    import onnx
    import torch

    axes: dict[int, str] = {}
    if dynamic_batch:
        axes[0] = "batch"
    if dynamic_shape:
        axes.update({2: "height", 3: "width"})
    dummy = torch.randn(1, contract.channels, contract.height, contract.width)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic are expected
        torch.onnx.export(network, (dummy,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes} if axes else None,
                          do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def simplify_graph(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant-fold and fuse with onnxslim; dynamic dimensions stay symbolic."""
    import onnxslim

    return onnxslim.slim(proto)


def name_output_dims(proto: onnx.ModelProto) -> None:
    """Declare the output as (N, 1, H, W) with the input's dimension names or sizes.

    The exporter leaves the channel dimension symbolic after a dynamic-shape trace; runtimes
    and Triton read the declared shape, so it is stated exactly.
    """
    source = proto.graph.input[0].type.tensor_type.shape.dim
    target = proto.graph.output[0].type.tensor_type.shape.dim
    for index, dim in enumerate(target):
        dim.Clear()
        if index == 1:
            dim.dim_value = 1
        elif source[index].HasField("dim_param"):
            dim.dim_param = source[index].dim_param
        else:
            dim.dim_value = source[index].dim_value


def save_onnx(proto: onnx.ModelProto, output: str | Path) -> Path:
    """Check the model and write it atomically as one file with the weights embedded."""
    import onnx

    output = Path(output)
    if proto.ByteSize() >= 2**31:
        raise ModelFileError("the model exceeds protobuf's 2 GB limit for a single ONNX file; "
                             "this exporter does not write external data", output)
    onnx.checker.check_model(proto)
    with atomic_path(output) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    return output


def build_onnx(model: CFLNet | str | Path, *, size: Size | None = None,
               dynamic_batch: bool = True, dynamic_shape: bool = False, opset: int = 17,
               simplify: bool = True, source_sha256: str | None = None,
               mode: Mode | None = None, tile_overlap: int | None = None) -> onnx.ModelProto:
    """The fp32 model proto with metadata, not yet written (see ``export_onnx``).

    ``source_sha256`` names the checkpoint an in-memory model was loaded from.
    """
    from cflnet_sdk.training.model import CFLNetInference

    if opset < 13:
        raise ConfigError(f"opset {opset} is too old: the exporter needs opset 13 or newer")
    net, own_sha256 = resolve_model(model)
    source_sha256 = own_sha256 if source_sha256 is None else source_sha256
    contract = export_contract(net.contract, size, mode, tile_overlap)
    contract.check_channels(3 + net.config.extra_channels,
                            model if isinstance(model, (str, Path)) else None)
    if contract.mode == "tile" and dynamic_shape:
        raise ConfigError("a tile-mode model runs fixed tiles of its contract size: export it "
                          "without --dynamic-shape (only the batch, the tile count, varies)")
    source = cpu_float32(net)
    was_training = source.training
    try:
        proto = trace_to_onnx(CFLNetInference(source).eval(), contract, dynamic_batch,
                              dynamic_shape, opset)
    finally:
        source.train(was_training)  # the inference view shares modules with the caller's model
    if simplify:
        proto = simplify_graph(proto)
    name_output_dims(proto)
    proto.producer_name, proto.producer_version = "cflnet-sdk", __version__
    set_metadata(proto, file_metadata(net, contract, source_sha256))
    return proto


def export_onnx(model: CFLNet | str | Path, output: str | Path, *, size: Size | None = None,
                dynamic_batch: bool = True, dynamic_shape: bool = False, opset: int = 17,
                simplify: bool = True, mode: Mode | None = None,
                tile_overlap: int | None = None) -> Path:
    """Export ``CFLNetInference`` of ``model`` (a CFLNet or a ``.safetensors`` path) to ONNX.

    Input ``image`` float32 (N, C, H, W) normalised by the contract (C = contract.channels);
    output ``probability`` float32 (N, 1, H, W). ``size`` sets the export height/width (the
    tile size in tile mode) written into the contract, ``mode`` the default mode runtimes use,
    ``tile_overlap`` how far tiles overlap in tile mode (fewer tiles, faster, when smaller);
    ``dynamic_shape`` also lets H and W vary at run time (multiples of 32; not in tile mode).
    """
    proto = build_onnx(model, size=size, dynamic_batch=dynamic_batch,
                       dynamic_shape=dynamic_shape, opset=opset, simplify=simplify, mode=mode,
                       tile_overlap=tile_overlap)
    return save_onnx(proto, output)
