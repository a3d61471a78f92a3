"""A Triton ensemble around an ONNX Runtime or TensorRT model: decoding and the preprocessing
contract in a Python-backend ``NAME_pre`` step, the accelerated model as ``NAME_model``, the
probability map at the image's size, score and size from a Python ``NAME_post`` step. Clients
send encoded image bytes to ``NAME`` as they would to ``cflnet serve``.

The model keeps Triton's dynamic batcher (requests of many clients share its calls); an image
becomes one input in resize mode and its tiles in tile mode, and the tiles of one image must fit
in one call of the model (its max batch).
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from cflnet_sdk.contract import Mode
from cflnet_sdk.export.triton import (
    ServedModel,
    TritonOptions,
    batching,
    describe_engine,
    describe_onnx,
    write_triton_repository,
)
from cflnet_sdk.metadata import CONTRACT_KEY, INPUT_NAME, OUTPUT_NAME, PRECISION_KEY
from cflnet_sdk.serving import pipeline
from cflnet_sdk.serving.repository import (
    output_specs,
    parameters_text,
    quoted,
    step_configs,
    tensors_text,
    write_model_folder,
)


def describe(model: Path) -> ServedModel:
    """The model as the native writer sees it (that writer has validated the file already)."""
    from cflnet_sdk.engine_file import read_engine

    if model.suffix == ".onnx":
        return describe_onnx(model)
    header, _ = read_engine(model)
    return describe_engine(header or {}, model)


def ensemble_config(name: str, output: pipeline.Output, params: dict[str, str]) -> str:
    """``config.pbtxt`` of the ensemble: pre -> model -> post."""
    outputs = output_specs(output)
    post_out = "\n".join(f"      output_map {{ key: {quoted(n)} value: {quoted(n)} }}"
                         for n, _, _ in outputs)
    steps = (
        f"    {{\n      model_name: {quoted(name + '_pre')}\n      model_version: -1\n"
        f"      input_map {{ key: {quoted(pipeline.INPUT)} value: {quoted(pipeline.INPUT)} }}\n"
        f"      output_map {{ key: {quoted(pipeline.MODEL_INPUT)} value: \"model_input\" }}\n"
        f"      output_map {{ key: {quoted(pipeline.SIZE)} value: \"image_size\" }}\n    }},\n"
        f"    {{\n      model_name: {quoted(name + '_model')}\n      model_version: -1\n"
        f"      input_map {{ key: {quoted(INPUT_NAME)} value: \"model_input\" }}\n"
        f"      output_map {{ key: {quoted(OUTPUT_NAME)} value: \"model_output\" }}\n    }},\n"
        f"    {{\n      model_name: {quoted(name + '_post')}\n      model_version: -1\n"
        f"      input_map {{ key: {quoted(pipeline.MODEL_OUTPUT)} value: \"model_output\" }}\n"
        f"      input_map {{ key: {quoted(pipeline.SIZE)} value: \"image_size\" }}\n"
        f"{post_out}\n    }}")
    lines = [f"name: {quoted(name)}", 'platform: "ensemble"', "max_batch_size: 0",
             tensors_text("input", [(pipeline.INPUT, "TYPE_STRING", [1])]),
             tensors_text("output", outputs),
             f"ensemble_scheduling {{\n  step [\n{steps}\n  ]\n}}"]
    return "\n".join(lines + parameters_text(params)) + "\n"


def write_ensemble_repository(model: str | Path, repository: str | Path,
                              options: TritonOptions | None = None,
                              output: pipeline.Output = "probability", mode: Mode | None = None,
                              max_pixels: int = pipeline.MAX_PIXELS) -> Path:
    """Write ``NAME_model`` (ONNX Runtime or TensorRT), ``NAME_pre``, ``NAME_post`` and the
    ensemble ``NAME``; returns the ensemble's folder."""
    options = options or TritonOptions()
    pipeline.check_output(output)
    model = Path(model)
    write_triton_repository(model, repository, replace(options, name=f"{options.name}_model"))
    served = describe(model)
    contract = served.contract if mode is None else replace(served.contract, mode=mode)
    per_call = batching(served, options) or served.batch
    for name, config in step_configs(options.name, contract, per_call, output,
                                     options.instances, max_pixels).items():
        write_model_folder(Path(repository), name, config)
    params = {CONTRACT_KEY: contract.to_json(), PRECISION_KEY: served.precision}
    target = Path(repository) / options.name
    shutil.rmtree(target, ignore_errors=True)
    (target / "1").mkdir(parents=True)
    (target / "config.pbtxt").write_text(ensemble_config(options.name, output, params),
                                         encoding="utf-8")
    return target
