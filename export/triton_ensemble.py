"""A Triton ensemble around an ONNX Runtime or TensorRT model: decoding and the preprocessing
contract in a Python-backend ``NAME_pre`` step, the accelerated model as ``NAME_model``, the
probability map at the image's size, score and size from a Python ``NAME_post`` step. When the
model's verdict includes copy-move evidence (the default model's does), a ``NAME_copy_move``
step analyses the same bytes while the model runs and ``NAME_post`` fuses it. Clients
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


def ensemble_config(name: str, output: pipeline.Output, params: dict[str, str],
                    copy_move: bool = False) -> str:
    """``config.pbtxt`` of the ensemble: pre -> model -> post, and with ``copy_move`` a
    copy-move step on the same bytes, which Triton runs while the model does."""
    outputs = output_specs(output)

    def step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
        maps = [f"      input_map {{ key: {quoted(k)} value: {quoted(v)} }}"
                for k, v in inputs.items()]
        maps += [f"      output_map {{ key: {quoted(k)} value: {quoted(v)} }}"
                 for k, v in outputs.items()]
        return (f"    {{\n      model_name: {quoted(name + model)}\n      model_version: -1\n"
                + "\n".join(maps) + "\n    }")

    evidence = {pipeline.COPY_MOVE: "copy_move", pipeline.COPY_MOVE_SCORE: "copy_move_score"} \
        if copy_move else {}
    steps = [
        step("_pre", {pipeline.INPUT: pipeline.INPUT},
             {pipeline.MODEL_INPUT: "model_input", pipeline.SIZE: "image_size"}),
        step("_model", {INPUT_NAME: "model_input"}, {OUTPUT_NAME: "model_output"}),
        *([step("_copy_move", {pipeline.INPUT: pipeline.INPUT}, evidence)] if copy_move else []),
        step("_post", {pipeline.MODEL_OUTPUT: "model_output", pipeline.SIZE: "image_size",
                       **evidence}, {n: n for n, _, _ in outputs}),
    ]
    lines = [f"name: {quoted(name)}", 'platform: "ensemble"', "max_batch_size: 0",
             tensors_text("input", [(pipeline.INPUT, "TYPE_STRING", [1])]),
             tensors_text("output", outputs),
             "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}"]
    return "\n".join(lines + parameters_text(params)) + "\n"


def write_ensemble_repository(model: str | Path, repository: str | Path,
                              options: TritonOptions | None = None,
                              output: pipeline.Output = "probability", mode: Mode | None = None,
                              max_pixels: int = pipeline.MAX_PIXELS) -> Path:
    """Write ``NAME_model`` (ONNX Runtime or TensorRT), ``NAME_pre``, ``NAME_post``,
    ``NAME_copy_move`` when the model's verdict fuses copy-move evidence, and the ensemble
    ``NAME``; returns the ensemble's folder."""
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
    config = ensemble_config(options.name, output, params, contract.fuses_copy_move)
    (target / "config.pbtxt").write_text(config, encoding="utf-8")
    return target
