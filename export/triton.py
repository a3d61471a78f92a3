"""Write a Triton Inference Server model repository for a cflnet ONNX model or engine.

Layout: ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/1/model.onnx`` (``onnxruntime_onnx``) or
``REPO/NAME/1/model.plan`` (``tensorrt_plan``). Triton deserializes a plan itself and cannot
skip our header, so the plan is written raw; the header's contract goes into the config's
``parameters`` instead, where clients can read it with the model-config endpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import ConfigError, ModelFileError
from cflnet_sdk.fileio import atomic_path, write_bytes_atomic
from cflnet_sdk.metadata import CONTRACT_KEY, INPUT_NAME, OUTPUT_NAME, PRECISION_KEY

Kind = Literal["gpu", "cpu"]
ACCELERATORS = ("none", "fp32", "fp16")


@dataclass(frozen=True)
class ServedModel:
    """What the config needs to know about the model file, whatever its format."""

    platform: str  # onnxruntime_onnx | tensorrt_plan
    contract: Contract
    precision: str
    batch: int | None  # fixed batch size of the model, None when dynamic
    max_batch: int | None  # largest batch the model accepts (engine profile), None = any
    dynamic_shape: bool


@dataclass(frozen=True)
class TritonOptions:
    name: str = "cflnet"
    max_batch: int = 16
    instances: int = 1
    dynamic_batching: bool = True
    kind: Kind = "gpu"
    accelerator: str = "none"  # TensorRT execution accelerator for an ONNX model on the GPU
    queue_delay_us: int = 100

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ConfigError(f"--name {self.name!r} must be a plain directory name")
        if self.max_batch < 0 or self.instances < 1:
            raise ConfigError("--max-batch must be >= 0 and --instances >= 1")
        if self.kind not in ("gpu", "cpu"):
            raise ConfigError(f"--kind {self.kind!r} is not 'gpu' or 'cpu'")
        if self.accelerator not in ACCELERATORS:
            raise ConfigError(f"--trt-accelerator {self.accelerator!r} is not one of "
                              f"{', '.join(ACCELERATORS)}")
        if self.accelerator != "none" and self.kind != "gpu":
            raise ConfigError("the TensorRT accelerator needs --kind gpu")


def describe_onnx(path: Path) -> ServedModel:
    from cflnet_sdk.export.onnx import load_onnx

    proto = load_onnx(path, load_weights=False)
    meta = {p.key: p.value for p in proto.metadata_props}
    if CONTRACT_KEY not in meta:
        raise ModelFileError("an ONNX file without cflnet metadata; export it with "
                             "`cflnet-export onnx`", path)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    fixed = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return ServedModel("onnxruntime_onnx", Contract.from_json(meta[CONTRACT_KEY]),
                       meta.get(PRECISION_KEY, "fp32"), fixed[0], None,
                       fixed[2] is None or fixed[3] is None)


def describe_engine(header: dict, path: Path) -> ServedModel:
    from cflnet_sdk.engine_file import engine_contract

    try:
        profile = header["profiles"][0]
        low, high = profile["min"], profile["max"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelFileError(f"engine header lacks {exc}; rebuild the engine with "
                             "`cflnet-export engine`", path) from exc
    return ServedModel("tensorrt_plan", engine_contract(header, path),
                       header.get("precision", "fp32"), low[0] if low[0] == high[0] else None,
                       high[0], low[2:] != high[2:])


def batching(model: ServedModel, options: TritonOptions) -> int:
    """Triton's ``max_batch_size``: 0 when the model's batch is fixed, else the option."""
    if model.batch is not None:
        return 0
    if model.max_batch is not None and options.max_batch > model.max_batch:
        raise ConfigError(f"--max-batch {options.max_batch} exceeds the engine's profile "
                          f"maximum {model.max_batch}; rebuild with --max-shape "
                          f"{options.max_batch}x{model.contract.channels}xHxW or lower "
                          "--max-batch")
    return options.max_batch


def dims_text(model: ServedModel, channels: int, max_batch: int) -> str:
    height, width = (-1, -1) if model.dynamic_shape else model.contract.size
    dims = [channels, height, width]
    if max_batch == 0:
        dims.insert(0, model.batch or 1)
    return ", ".join(str(d) for d in dims)


def quoted(text: str) -> str:
    """A protobuf text-format string literal."""
    return json.dumps(text)  # JSON string escaping is valid text-format escaping for ASCII


def config_text(model: ServedModel, options: TritonOptions) -> str:
    """The ``config.pbtxt`` for ``model`` (protobuf text format of Triton's ModelConfig)."""
    max_batch = batching(model, options)
    kind = "KIND_GPU" if options.kind == "gpu" else "KIND_CPU"
    if model.platform == "tensorrt_plan" and kind != "KIND_GPU":
        raise ConfigError("a TensorRT plan runs on the GPU only: use --kind gpu")
    lines = [
        f"name: {quoted(options.name)}",
        f"platform: {quoted(model.platform)}",
        f"max_batch_size: {max_batch}",
        f"input [\n  {{\n    name: {quoted(INPUT_NAME)}\n    data_type: TYPE_FP32\n"
        f"    dims: [ {dims_text(model, model.contract.channels, max_batch)} ]\n  }}\n]",
        f"output [\n  {{\n    name: {quoted(OUTPUT_NAME)}\n    data_type: TYPE_FP32\n"
        f"    dims: [ {dims_text(model, 1, max_batch)} ]\n  }}\n]",
        f"instance_group [\n  {{\n    count: {options.instances}\n    kind: {kind}\n  }}\n]",
    ]
    if options.dynamic_batching and max_batch > 0:
        lines.append("dynamic_batching {\n  max_queue_delay_microseconds: "
                     f"{options.queue_delay_us}\n}}")
    if options.accelerator != "none" and model.platform == "onnxruntime_onnx":
        lines.append(
            "optimization {\n  execution_accelerators {\n    gpu_execution_accelerator : [ {\n"
            '      name : "tensorrt"\n'
            f'      parameters {{ key: "precision_mode" value: "{options.accelerator.upper()}" }}\n'
            '      parameters { key: "max_workspace_size_bytes" value: "4294967296" }\n'
            "    } ]\n  }\n}")
    for key, value in ((CONTRACT_KEY, model.contract.to_json()), (PRECISION_KEY, model.precision)):
        lines.append(f"parameters {{\n  key: {quoted(key)}\n  value: {{ string_value: "
                     f"{quoted(value)} }}\n}}")
    return "\n".join(lines) + "\n"


def write_triton_repository(model: str | Path, repository: str | Path,
                            options: TritonOptions | None = None) -> Path:
    """Write ``REPOSITORY/NAME`` (config.pbtxt and version 1) for a .onnx or .engine file.

    Returns the model directory. An existing model directory of the same name is replaced
    only after the new one is complete.
    """
    from cflnet_sdk.engine_file import read_engine

    options = options or TritonOptions()
    model = Path(model)
    if not model.is_file():
        raise ModelFileError("no such model file; pass a .onnx from `cflnet-export onnx` or a "
                             ".engine from `cflnet-export engine`", model)
    if model.suffix == ".onnx":
        served, payload, filename = describe_onnx(model), None, "model.onnx"
    elif model.suffix in (".engine", ".plan"):
        header, plan = read_engine(model)
        if header is None:
            raise ModelFileError("a raw TensorRT plan without the cflnet header: its "
                                 "preprocessing is unknown; build it with `cflnet-export "
                                 "engine` instead", model)
        served, payload, filename = describe_engine(header, model), plan, "model.plan"
    else:
        raise ModelFileError("unknown model type; pass a .onnx or .engine file", model)
    text = config_text(served, options)
    target = Path(repository) / options.name
    staging = target.with_name(f".{options.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "1").mkdir(parents=True)
    if payload is None:
        with atomic_path(staging / "1" / filename) as tmp:
            shutil.copyfile(model, tmp)
    else:
        write_bytes_atomic(staging / "1" / filename, payload)
    (staging / "config.pbtxt").write_text(text, encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target
