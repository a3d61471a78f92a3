"""Write Triton Python-backend models for cflnet: the whole pipeline in one model (what
``cflnet serve`` runs and ``cflnet-export triton --backend python`` writes), or the pre/post
steps of an ensemble.

Each model folder is self-contained: ``config.pbtxt``, ``1/model.py``, a copy of the
``cflnet_sdk`` runtime modules in ``1/cflnet_sdk`` (the network's modules too for a checkpoint;
no data, export or CLI code) and, for the whole pipeline, the model file itself. A stock Triton
needs only numpy, Pillow and the model's runtime (onnxruntime, tensorrt, or torch and timm) in
its Python backend's environment.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cflnet_sdk.contract import Contract, Mode
from cflnet_sdk.errors import ConfigError, ModelFileError
from cflnet_sdk.serving import pipeline

Kind = Literal["cpu", "gpu"]
MODEL_SUFFIXES = (".onnx", ".engine", ".plan", ".safetensors")
# (name, Triton data type, dims without the batch dimension)
TensorSpec = tuple[str, str, list[int]]


@dataclass(frozen=True)
class PythonModelOptions:
    """How Triton schedules a cflnet Python-backend model."""

    name: str = "cflnet"
    max_batch: int = 8  # 0: no batching; else the dynamic batcher's largest batch
    instances: int = 1
    kind: Kind = "cpu"
    queue_delay_us: int = 100
    max_queue: int = 64  # requests waiting beyond this are refused at once (0: unbounded)
    output: pipeline.Output = "probability"
    mode: Mode | None = None  # None: the model's contract decides
    backend: str = "auto"
    max_pixels: int = pipeline.MAX_PIXELS

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ ") or self.name.startswith("."):
            raise ConfigError(f"model name {self.name!r} must be a plain directory name")
        if self.max_batch < 0 or self.instances < 1 or self.max_queue < 0:
            raise ConfigError("--max-batch and --max-queue must be >= 0 and --instances >= 1")
        if self.kind not in ("cpu", "gpu"):
            raise ConfigError(f"--kind {self.kind!r} is not 'cpu' or 'gpu'")
        if self.mode not in (None, "resize", "tile"):
            raise ConfigError(f"--mode {self.mode!r} is not 'resize' or 'tile'")
        if self.max_pixels < 1:
            raise ConfigError("--max-pixels must be positive")
        pipeline.check_output(self.output)


def quoted(text: str) -> str:
    """A protobuf text-format string literal."""
    return json.dumps(text)  # JSON string escaping is valid text-format escaping for ASCII


def output_specs(output: pipeline.Output) -> list[TensorSpec]:
    first = (pipeline.PROBABILITY, "TYPE_FP32", [-1, -1]) if output == "probability" else \
        (pipeline.MASK_PNG, "TYPE_STRING", [1])
    return [first, (pipeline.SCORE, "TYPE_FP32", [1]), (pipeline.SIZE, "TYPE_INT32", [2])]


def tensors_text(field: str, specs: list[TensorSpec]) -> str:
    items = ",\n".join(f"  {{\n    name: {quoted(name)}\n    data_type: {dtype}\n"
                       f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}"
                       for name, dtype, dims in specs)
    return f"{field} [\n{items}\n]"


def parameters_text(params: dict[str, str]) -> list[str]:
    return [f"parameters {{\n  key: {quoted(key)}\n  value: {{ string_value: {quoted(value)} }}\n}}"
            for key, value in params.items()]


def python_config(name: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
                  params: dict[str, str], max_batch: int, instances: int, kind: Kind,
                  queue_delay_us: int = 100, max_queue: int = 0) -> str:
    """``config.pbtxt`` of a Python-backend model (protobuf text format of ModelConfig)."""
    lines = [f"name: {quoted(name)}", 'backend: "python"', f"max_batch_size: {max_batch}",
             tensors_text("input", inputs), tensors_text("output", outputs),
             f"instance_group [\n  {{\n    count: {instances}\n"
             f"    kind: {'KIND_GPU' if kind == 'gpu' else 'KIND_CPU'}\n  }}\n]"]
    if max_batch > 0:
        queue = f"\n  default_queue_policy {{ max_queue_size: {max_queue} }}" if max_queue else ""
        lines.append(f"dynamic_batching {{\n  max_queue_delay_microseconds: {queue_delay_us}"
                     f"{queue}\n}}")
    return "\n".join(lines + parameters_text(params)) + "\n"


def copy_runtime(version_dir: Path, torch_model: bool = False) -> None:
    """Copy ``cflnet_sdk``'s own modules, its runtime backends and this serving package, plus
    the network's modules for a checkpoint (the torch backend builds the model from them). The
    stage folders sit elsewhere in a checkout, so each is found through its import path."""
    import cflnet_sdk
    import cflnet_sdk.runtime
    import cflnet_sdk.serving

    packages = [(cflnet_sdk, "cflnet_sdk"), (cflnet_sdk.runtime, "cflnet_sdk/runtime"),
                (cflnet_sdk.serving, "cflnet_sdk/serving")]
    if torch_model:
        import cflnet_sdk.training

        packages.append((cflnet_sdk.training, "cflnet_sdk/training"))
    for package, target in packages:
        (version_dir / target).mkdir(parents=True)
        for source in Path(package.__file__).parent.glob("*.py"):
            shutil.copyfile(source, version_dir / target / source.name)
    shutil.copyfile(Path(__file__).with_name("triton_model.py"), version_dir / "model.py")


def write_model_folder(repository: Path, name: str, config: str,
                       files: tuple[Path, ...] = ()) -> Path:
    """Write ``REPOSITORY/NAME`` (config, model.py, runtime copy, ``files`` in version 1),
    replacing an existing folder of that name only once the new one is complete."""
    target = Path(repository) / name
    staging = target.with_name(f".{name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    version = staging / "1"
    copy_runtime(version, torch_model=any(f.suffix == ".safetensors" for f in files))
    for source in files:
        shutil.copyfile(source, version / source.name)
    (staging / "config.pbtxt").write_text(config, encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    return target


def write_python_repository(model: str | Path, repository: str | Path,
                            options: PythonModelOptions | None = None) -> Path:
    """Write the whole-pipeline model for any file the Localizer opens; returns its folder."""
    options = options or PythonModelOptions()
    model = Path(model)
    if not model.is_file():
        raise ModelFileError("no such model file; pass a .onnx, .engine or .safetensors file",
                             model)
    if model.suffix not in MODEL_SUFFIXES:
        raise ModelFileError(f"unknown model type; pass one of {', '.join(MODEL_SUFFIXES)}",
                             model)
    if model.name == "model.py":
        raise ModelFileError("rename the model file: model.py is the backend's entry point",
                             model)
    companions = [p for p in [model.with_name(model.name + ".data")] if p.is_file()]
    params = {"cflnet.role": "localizer", "cflnet.model_file": model.name,
              "cflnet.backend": options.backend, "cflnet.output": options.output,
              "cflnet.max_pixels": str(options.max_pixels), "cflnet.mode": options.mode or ""}
    config = python_config(options.name, [(pipeline.INPUT, "TYPE_STRING", [1])],
                           output_specs(options.output), params, options.max_batch,
                           options.instances, options.kind, options.queue_delay_us,
                           options.max_queue)
    return write_model_folder(Path(repository), options.name, config, (model, *companions))


def step_configs(name: str, contract: Contract, model_batch: int | None, output: pipeline.Output,
                 instances: int, max_pixels: int = pipeline.MAX_PIXELS) -> dict[str, str]:
    """Configs of an ensemble's Python steps around a model that takes at most ``model_batch``
    inputs per call (None: any number): ``NAME_pre``, ``NAME_post``, and ``NAME_copy_move``
    when the contract fuses copy-move evidence."""
    common = {"cflnet.contract": contract.to_json(), "cflnet.output": output,
              "cflnet.max_pixels": str(max_pixels)}
    image = [(pipeline.INPUT, "TYPE_STRING", [1])]
    tiles = [-1, contract.channels, *contract.size]
    size = (pipeline.SIZE, "TYPE_INT32", [2])
    evidence = [(pipeline.COPY_MOVE, "TYPE_FP32", [-1, -1]),
                (pipeline.COPY_MOVE_SCORE, "TYPE_FP32", [1])] \
        if contract.fuses_copy_move else []

    def step(role: str, inputs: list[TensorSpec], outputs: list[TensorSpec],
             **params: str) -> str:
        return python_config(f"{name}_{role}", inputs, outputs,
                             {"cflnet.role": role, **params, **common}, 0, instances, "cpu")

    configs = {
        f"{name}_pre": step("pre", image, [(pipeline.MODEL_INPUT, "TYPE_FP32", tiles), size],
                            **{"cflnet.max_tiles": str(model_batch or 0)}),
        f"{name}_post": step("post", [(pipeline.MODEL_OUTPUT, "TYPE_FP32",
                                       [-1, 1, *contract.size]), size, *evidence],
                             output_specs(output))}
    if evidence:
        configs[f"{name}_copy_move"] = step("copy_move", image, evidence)
    return configs
