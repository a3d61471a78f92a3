"""Build TensorRT engines from a cflnet ONNX file, for TensorRT 10.x and 11.x.

TensorRT 10 (JetPack 6) builds weakly typed networks with FP16/INT8 builder flags, or a
strongly typed network when the ONNX already carries its precision. TensorRT 11 removed the
flags and the calibrator: every network is strongly typed, precision comes from the ONNX
variant (``cflnet-export onnx --precision fp16|int8``). The choice follows the installed
``tensorrt.__version__``. ``tensorrt`` is imported only when a build starts.

TensorRT enables TF32 by default, so its "FP32" convolutions round their inputs to 10-bit
mantissas on Ampere and later GPUs; builds clear that flag unless asked (``tf32``), so float32
layers compute in float32 and the parity tolerances hold. The header records the choice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cflnet_sdk import __version__
from cflnet_sdk.contract import Contract
from cflnet_sdk.engine_file import write_engine
from cflnet_sdk.errors import BackendUnavailableError, ConfigError, ModelFileError
from cflnet_sdk.metadata import CONFIG_KEY, CONTRACT_KEY, INPUT_NAME, OUTPUT_NAME, PRECISION_KEY
from cflnet_sdk.tiling import TILE_BATCH, typical_tile_count

TRT_HINT = ("install TensorRT: `pip install cflnet-sdk[tensorrt]` on an x86-64 machine with an "
            "NVIDIA driver, or use the TensorRT that JetPack ships on a Jetson")
HARDWARE_COMPAT = ("same", "ampere+")
Shape = tuple[int, int, int, int]


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or BackendUnavailableError with the install hint."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(f"building engines needs TensorRT: {TRT_HINT}") from exc
    return tensorrt


def major_version(version: str) -> int:
    """``"10.3.0.26"`` -> 10."""
    try:
        return int(version.split(".")[0])
    except ValueError as exc:
        raise BackendUnavailableError(f"unrecognised TensorRT version {version!r}") from exc


def parse_shape(text: str) -> Shape:
    """``"4x3x256x256"`` -> (4, 3, 256, 256), the form trtexec uses (C: the model's channels)."""
    try:
        dims = tuple(int(part) for part in text.lower().replace(",", "x").split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 4 or min(dims) < 1:
        raise ConfigError(f"shape {text!r} is not NxCxHxW, e.g. 1x3x256x256")
    return dims  # type: ignore[return-value]


@dataclass(frozen=True)
class BuildOptions:
    """Everything ``cflnet-export engine`` passes to the builder (defaults: a GPU FP32 engine)."""

    fp16: bool = False
    int8: bool = False
    workspace_gib: float = 4.0
    min_shape: Shape | None = None
    opt_shape: Shape | None = None
    max_shape: Shape | None = None
    timing_cache: Path | None = None
    version_compatible: bool = False
    hardware_compat: str = "same"
    dla_core: int | None = None
    opt_level: int | None = None
    tf32: bool = False  # let float32 layers use TF32 math (faster, about 1e-3 relative error)

    def __post_init__(self) -> None:
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise ConfigError(f"--hardware-compat {self.hardware_compat!r} is not one of "
                              f"{', '.join(HARDWARE_COMPAT)}")
        if self.workspace_gib <= 0:
            raise ConfigError(f"--workspace {self.workspace_gib} GiB must be positive")
        if self.opt_level is not None and not 0 <= self.opt_level <= 5:
            raise ConfigError(f"--opt-level {self.opt_level} must be 0-5")
        if self.dla_core is not None and self.hardware_compat != "same":
            raise ConfigError("DLA engines cannot be hardware compatible; drop --hardware-compat")


@dataclass(frozen=True)
class OnnxSummary:
    """What the builder needs to know about the ONNX file, read without TensorRT."""

    path: Path
    contract: Contract
    config_json: str
    precision: str
    input_dims: tuple[int | None, ...]  # None where the dimension is dynamic


def read_onnx_summary(path: str | Path) -> OnnxSummary:
    """Contract, precision and input dimensions of a cflnet ONNX file, or ModelFileError."""
    from cflnet_sdk.export.onnx import load_onnx

    path = Path(path)
    proto = load_onnx(path, load_weights=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if CONTRACT_KEY not in meta or not proto.graph.input:
        raise ModelFileError("an ONNX file without cflnet metadata; export it with "
                             "`cflnet-export onnx` so the engine knows its preprocessing", path)
    if proto.graph.input[0].name != INPUT_NAME:
        raise ModelFileError(f"input is named {proto.graph.input[0].name!r}, not "
                             f"{INPUT_NAME!r}; re-export it with `cflnet-export onnx`", path)
    dims = tuple(d.dim_value if d.HasField("dim_value") else None
                 for d in proto.graph.input[0].type.tensor_type.shape.dim)
    return OnnxSummary(path, Contract.from_json(meta[CONTRACT_KEY]), meta.get(CONFIG_KEY, "{}"),
                       meta.get(PRECISION_KEY, "fp32"), dims)


def profile_shapes(summary: OnnxSummary, options: BuildOptions) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) input shapes: given ones, else defaults at the contract's input shape.

    Resize mode: batch 1..8, opt 1 (one image per call). Tile mode: batch 1..TILE_BATCH (what
    the Localizer sends per call), opt the tile count of a 12 MP photo capped at the maximum,
    since a photo's tiles fill every call. Static dimensions of the ONNX must not be
    contradicted; dynamic ones are filled in.
    """
    contract = summary.contract
    one = (contract.channels, *contract.size)
    batch_fixed = summary.input_dims[0]
    tile = contract.mode == "tile"
    high = options.max_shape or (batch_fixed or (TILE_BATCH if tile else 8), *one)
    typical = min(typical_tile_count(contract), high[0]) if tile else 1
    opt = options.opt_shape or (batch_fixed or typical, *one)
    low = options.min_shape or (batch_fixed or 1, *one)
    shapes = (low, opt, high)
    for axis, fixed in enumerate(summary.input_dims):
        if fixed is not None and any(shape[axis] != fixed for shape in shapes):
            raise ConfigError(f"the ONNX input has a fixed dimension {axis} = {fixed}, but the "
                              f"profile asks for {[s[axis] for s in shapes]}; re-export with "
                              "--dynamic-batch/--dynamic-shape or drop the shape options")
    if not all(lo <= op <= hi for lo, op, hi in zip(low, opt, high, strict=True)):
        raise ConfigError(f"profile shapes must satisfy min <= opt <= max per dimension: "
                          f"{low} {opt} {high}")
    return shapes


@dataclass(frozen=True)
class TypingPlan:
    """How a network is typed and which builder flags it takes, per TensorRT major version."""

    strongly_typed: bool
    flags: tuple[str, ...]
    precision: str


def typing_plan(trt_major: int, onnx_precision: str, options: BuildOptions) -> TypingPlan:
    """Decide strong/weak typing and precision flags; refuse combinations that cannot work."""
    wants = [name for name, on in (("fp16", options.fp16), ("int8", options.int8)) if on]
    if trt_major >= 11:
        if wants and onnx_precision not in wants:
            raise ConfigError(
                f"TensorRT {trt_major} has no --{wants[0]} builder flag: precision comes from "
                f"the ONNX, which is {onnx_precision}. Export the variant with `cflnet-export "
                f"onnx CKPT --precision {wants[0]}` and build that file without the flag")
        return TypingPlan(True, (), onnx_precision)
    if options.int8 and onnx_precision != "int8":
        raise ConfigError("--int8 needs the Q/DQ ONNX from `cflnet-export onnx --precision int8 "
                          "--calib DIR` (calibrator-based implicit INT8 is not supported)")
    if not wants and onnx_precision != "fp32":
        return TypingPlan(True, (), onnx_precision)  # the ONNX decides, as on TensorRT 11
    flags = tuple(name.upper() for name in wants)
    precision = "int8" if options.int8 else ("fp16" if options.fp16 else "fp32")
    if options.dla_core is not None and not flags:
        raise ConfigError("DLA runs FP16 or INT8 only: add --fp16 (or --int8)")
    return TypingPlan(False, flags, precision)


def gpu_identity() -> tuple[str, str]:
    """(GPU name, compute capability "8.7") of device 0, via cuda-python or torch."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart  # cuda-python < 12.6
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.rstrip("\x00"), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except ImportError:
        pass
    return "unknown", "unknown"


def engine_header(summary: OnnxSummary, plan: TypingPlan, shapes: tuple[Shape, Shape, Shape],
                  options: BuildOptions, trt_version: str, gpu: tuple[str, str]) -> dict[str, Any]:
    """The JSON header cflnet_sdk.engine_file writes in front of the plan."""
    return {
        "format": "cflnet-engine/1",
        "contract": json.loads(summary.contract.to_json()),
        "config": json.loads(summary.config_json),
        "tensorrt_version": trt_version,
        "gpu_name": gpu[0],
        "compute_capability": gpu[1],
        "hardware_compat": options.hardware_compat,
        "version_compatible": options.version_compatible,
        "dla_core": options.dla_core,
        "profiles": [{"input": INPUT_NAME, "min": list(shapes[0]), "opt": list(shapes[1]),
                      "max": list(shapes[2])}],
        "precision": plan.precision,
        "strongly_typed": plan.strongly_typed,
        "tf32": options.tf32,
        "sdk_version": __version__,
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
    }


def configure(trt: Any, builder: Any, config: Any, plan: TypingPlan,
              shapes: tuple[Shape, Shape, Shape], options: BuildOptions) -> None:
    """Apply memory, profile, precision, compatibility, DLA and optimisation settings."""
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE,
                                 int(options.workspace_gib * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *shapes)
    config.add_optimization_profile(profile)
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    if options.tf32:  # on by default in TensorRT: set or clear it explicitly either way
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if options.hardware_compat == "ampere+":
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    if options.dla_core is not None:
        if options.dla_core >= builder.num_DLA_cores:
            raise ConfigError(f"--dla-core {options.dla_core}: this device has "
                              f"{builder.num_DLA_cores} DLA cores")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def parse_network(trt: Any, builder: Any, logger: Any, plan: TypingPlan,
                  path: Path) -> tuple[Any, Any]:
    """(network, parser) parsed from the ONNX file; the parser must outlive the network."""
    flags = 0
    if plan.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") \
            and major_version(trt.__version__) < 11:  # 11 is always strongly typed
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelFileError(f"TensorRT's ONNX parser refused the model: {errors[:800]}", path)
    return network, parser


def load_timing_cache(trt: Any, config: Any, path: Path | None) -> Any:
    """Attach a timing cache (read from ``path`` when it exists) so rebuilds are fast."""
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(onnx_path: str | Path, output: str | Path,
                 options: BuildOptions | None = None) -> Path:
    """Build a TensorRT engine for this GPU and write it with the cflnet header."""
    from cflnet_sdk.fileio import write_bytes_atomic

    options = options or BuildOptions()
    summary = read_onnx_summary(onnx_path)
    trt = import_tensorrt()
    plan = typing_plan(major_version(trt.__version__), summary.precision, options)
    shapes = profile_shapes(summary, options)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = parse_network(trt, builder, logger, plan, summary.path)
    config = builder.create_builder_config()
    configure(trt, builder, config, plan, shapes, options)
    load_timing_cache(trt, config, options.timing_cache)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelFileError("TensorRT could not build an engine (see its log above); try a "
                             "larger --workspace or other profile shapes", summary.path)
    if options.timing_cache is not None:
        write_bytes_atomic(options.timing_cache, bytes(config.get_timing_cache().serialize()))
    header = engine_header(summary, plan, shapes, options, trt.__version__, gpu_identity())
    return write_engine(output, bytes(serialized), header)
