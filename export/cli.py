"""``cflnet-export``: ONNX (fp32/fp16/int8), TensorRT engines, Triton repositories, parity checks.

Heavy libraries (torch, onnx, tensorrt) load inside each command, so ``--help`` is instant.
"""

from __future__ import annotations

from pathlib import Path

import typer

from cflnet_sdk.cli import make_app, run
from cflnet_sdk.errors import ConfigError
from cflnet_sdk.export.calibration import Calibration
from cflnet_sdk.export.precision import INT8_METHOD_HELP, KEEP_FLOAT_HELP

app = make_app("cflnet-export",
               "Export CFL-Net checkpoints to ONNX, TensorRT and Triton, and prove parity.")


def _threads() -> None:
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), 8))


def _report(figures: list, label: str) -> bool:
    """Print one line per probe set; True when all passed."""
    typer.echo(label)
    for item in figures:
        typer.echo(f"  {item.line()}")
    return all(item.passed for item in figures)


@app.command("onnx")
def onnx_command(
    model: Path = typer.Argument(..., help="Checkpoint (.safetensors) to export."),
    output: Path = typer.Option(..., "-o", "--output", help="The .onnx file to write."),
    size: int | None = typer.Option(None, "--size", help="Export size (square; the tile size "
                                    "in tile mode); default: the checkpoint's contract size."),
    mode: str | None = typer.Option(None, "--mode", help="resize | tile: the mode runtimes use "
                                    "by default; default: the checkpoint's."),
    tile_overlap: int | None = typer.Option(None, "--tile-overlap", min=0, help="Tile mode: "
                                            "pixels neighbouring tiles share (a multiple of 8; "
                                            "less is faster); default: the checkpoint's."),
    dynamic_batch: bool = typer.Option(True, "--dynamic-batch/--static",
                                       help="Batch dimension symbolic, or fixed to 1."),
    dynamic_shape: bool = typer.Option(False, "--dynamic-shape",
                                       help="Height and width symbolic too (multiples of 32)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (13 or newer)."),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Run onnxslim."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | fp16 | int8 (Q/DQ)."),
    calib: Path | None = typer.Option(None, "--calib", help="INT8: folder of calibration "
                                      "images (default: packaged photos with synthetic edits)."),
    calib_count: int = typer.Option(64, "--calib-count", help="INT8: calibration photos."),
    int8_target: str = typer.Option("tensorrt", "--int8-target",
                                     help="INT8 layout: tensorrt (s8 activations) | cpu (u8)."),
    int8_method: str | None = typer.Option(None, "--int8-method", help=INT8_METHOD_HELP),
    keep_float: str | None = typer.Option(None, "--int8-keep-float", help=KEEP_FLOAT_HELP),
    weights_fp16: bool = typer.Option(False, "--weights-fp16", help="fp32 model: store "
                                      "weights as float16 (half the file, same speed)."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Compare the file with PyTorch afterwards."),
) -> None:
    """Export the inference network to one ONNX file, then verify it against PyTorch."""
    _threads()
    from cflnet_sdk.export.onnx import build_onnx, resolve_model, save_onnx
    from cflnet_sdk.export.precision import Int8Recipe, make_variant, store_weights_fp16

    recipe = Int8Recipe.parse(int8_method, keep_float)
    net, sha = resolve_model(model)
    proto = build_onnx(net, size=size, dynamic_batch=dynamic_batch, dynamic_shape=dynamic_shape,
                       opset=opset, simplify=simplify, source_sha256=sha,
                       mode=mode, tile_overlap=tile_overlap)  # type: ignore[arg-type]
    calibration = None
    if precision == "int8":
        calibration = calibrate(proto, calib, calib_count)
    variant = make_variant(proto, precision, calibration=calibration,  # type: ignore[arg-type]
                           int8_target=int8_target, recipe=recipe,  # type: ignore[arg-type]
                           simplify=simplify)
    if weights_fp16:
        if precision != "fp32":
            raise ConfigError("--weights-fp16 applies to fp32 models (fp16/int8 are smaller "
                              "already)")
        variant = store_weights_fp16(variant)
    save_onnx(variant, output)
    typer.echo(f"wrote {output} ({precision}, {output.stat().st_size / 1e6:.1f} MB)")
    if net.contract.decision_threshold is not None and \
            _contract_of(variant).decision_threshold is None:
        typer.echo("the export changes the maps (size, mode or tile overlap): its verdict "
                   "decides at the mask threshold until `cflnet calibrate` sets an operating "
                   "point")
    checked_as = "fp16" if weights_fp16 else precision  # half weights: fp16 tolerances
    if verify and not verify_export(net, output, checked_as, dynamic_batch, dynamic_shape):
        raise typer.Exit(1)


def _contract_of(proto):
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.metadata import CONTRACT_KEY

    return Contract.from_json({p.key: p.value for p in proto.metadata_props}[CONTRACT_KEY])


def calibrate(proto, folder: Path | None, count: int) -> Calibration:
    """Calibration inputs for the exported graph's contract, reporting every file skipped."""
    from cflnet_sdk.export.calibration import collect_calibration

    calibration = collect_calibration(_contract_of(proto), folder, count)
    for line in calibration.lines():
        typer.echo(line)
    return calibration


def verify_export(net, output: Path, precision: str, dynamic_batch: bool,
                  dynamic_shape: bool) -> bool:
    """Random inputs, real photos (and for fp16/int8 the held-out set) against PyTorch; for a
    tile-mode model also tile-mode maps of real photos of odd sizes."""
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export import parity
    from cflnet_sdk.export.onnx import read_metadata

    contract = Contract.from_json(read_metadata(output)["cflnet.contract"])
    int8 = precision == "int8"
    probes = [] if int8 else [parity.random_probes(contract, batch=2 if dynamic_batch else 1)]
    probes.append(parity.photo_probes(contract))
    if dynamic_shape:
        wide = contract.with_size(contract.height, contract.width + 64)
        probes.append(parity.Probes(f"random {wide.height}x{wide.width}",
                                    parity.random_probes(wide, 1, seed=3).inputs))
    if precision != "fp32":
        probes.append(parity.held_out_probes(contract))
    atol = parity.DEFAULT_ATOL[precision]
    results = [parity.compare(parity.torch_runner(net), parity.onnx_runner(output), p,
                              contract.threshold, atol) for p in probes]
    if contract.mode == "tile":
        results.append(parity.compare_tiled(
            parity.torch_runner(net), parity.onnx_runner(output), parity.odd_size_photos(),
            contract, atol, max_batch=None if dynamic_batch else 1))
    if int8:
        results = [parity.judge_int8(item) for item in results]
    rule = parity.INT8_RULE if int8 else f"max abs error <= {atol}"
    return _report(results, f"{output.name} vs PyTorch (pass: {rule}):")


@app.command("engine")
def engine_command(
    model: Path = typer.Argument(..., help="ONNX file from `cflnet-export onnx`."),
    output: Path = typer.Option(..., "-o", "--output", help="The .engine file to write."),
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT 10: allow FP16 kernels."),
    int8: bool = typer.Option(False, "--int8", help="TensorRT 10: INT8 for a Q/DQ ONNX."),
    workspace: float = typer.Option(4.0, "--workspace", help="Builder workspace in GiB."),
    min_shape: str | None = typer.Option(None, "--min-shape", help="NxCxHxW, e.g. 1x3x256x256 "
                                         "(default: batch 1..8, opt 1; tile-mode models 1..16, "
                                         "opt the tile count of a 12 MP photo up to 16)"),
    opt_shape: str | None = typer.Option(None, "--opt-shape", help="NxCxHxW"),
    max_shape: str | None = typer.Option(None, "--max-shape", help="NxCxHxW"),
    timing_cache: Path | None = typer.Option(None, "--timing-cache",
                                             help="Read/update this timing cache file."),
    version_compatible: bool = typer.Option(False, "--version-compatible",
                                            help="Runs on later TensorRT of the same major."),
    hardware_compat: str = typer.Option("same", "--hardware-compat",
                                        help="same | ampere+ (any GPU of compute 8.0+)."),
    dla_core: int | None = typer.Option(None, "--dla-core", help="Jetson DLA core (GPU "
                                        "fallback on)."),
    opt_level: int | None = typer.Option(None, "--opt-level", help="Builder optimisation 0-5."),
    tf32: bool = typer.Option(False, "--tf32", help="Let float32 layers use TF32 math on "
                              "Ampere+ (faster, about 1e-3 relative error; off: true fp32)."),
) -> None:
    """Build a TensorRT engine (10.x or 11.x, whichever is installed) with the cflnet header."""
    from cflnet_sdk.engine_file import read_engine
    from cflnet_sdk.export.tensorrt import BuildOptions, build_engine, parse_shape

    options = BuildOptions(
        fp16=fp16, int8=int8, workspace_gib=workspace,
        min_shape=parse_shape(min_shape) if min_shape else None,
        opt_shape=parse_shape(opt_shape) if opt_shape else None,
        max_shape=parse_shape(max_shape) if max_shape else None,
        timing_cache=timing_cache, version_compatible=version_compatible,
        hardware_compat=hardware_compat, dla_core=dla_core, opt_level=opt_level, tf32=tf32)
    path = build_engine(model, output, options)
    header, _ = read_engine(path)
    assert header is not None
    typer.echo(f"wrote {path}: TensorRT {header['tensorrt_version']}, {header['precision']}"
               f"{' (TF32 on)' if header['tf32'] else ''}, "
               f"{header['gpu_name']} (compute {header['compute_capability']}), "
               f"profile {header['profiles'][0]}")


@app.command("triton")
def triton_command(
    model: Path = typer.Argument(..., help=".onnx, .engine, or a .safetensors to export first "
                                 "(served as is with --backend python)."),
    output: Path = typer.Option(..., "-o", "--output", help="Model repository folder."),
    name: str = typer.Option("cflnet", "--name", help="Model name in the repository."),
    backend: str = typer.Option("native", "--backend", help="native (onnxruntime_onnx or "
                                "tensorrt_plan on model tensors), python (the whole pipeline: "
                                "image bytes in, map out) or ensemble (python pre/post steps "
                                "around the native model)."),
    max_batch: int = typer.Option(16, "--max-batch", help="Triton max_batch_size."),
    instances: int = typer.Option(1, "--instances", help="Model instances per device."),
    dynamic_batching: bool = typer.Option(True, "--dynamic-batching/--no-dynamic-batching"),
    kind: str = typer.Option("gpu", "--kind", help="gpu | cpu instances."),
    trt_accelerator: str = typer.Option("none", "--trt-accelerator",
                                        help="ONNX on GPU: none | fp32 | fp16 TensorRT EP."),
    answer: str = typer.Option("probability", "--answer", help="python/ensemble: probability "
                               "(float32 map) or mask (PNG bytes)."),
    mode: str | None = typer.Option(None, "--mode", help="python/ensemble: resize or tile; "
                                    "default: the model's."),
    max_queue: int = typer.Option(64, "--max-queue", help="python: requests that may wait "
                                  "(0: unbounded)."),
) -> None:
    """Write a Triton model repository: the native model with config.pbtxt, the whole pipeline
    as a Python-backend model, or an ensemble of both."""
    import tempfile

    from cflnet_sdk.export.triton import TritonOptions, write_triton_repository

    if backend not in ("native", "python", "ensemble"):
        raise ConfigError(f"--backend {backend!r} is not native, python or ensemble")
    if backend == "python":
        from cflnet_sdk.serving.repository import PythonModelOptions, write_python_repository

        target = write_python_repository(model, output, PythonModelOptions(
            name=name, max_batch=max_batch if dynamic_batching else 0, instances=instances,
            kind=kind, output=answer, mode=mode, max_queue=max_queue))  # type: ignore[arg-type]
        typer.echo(f"wrote {target}/config.pbtxt and {target}/1/ (model.py, the cflnet_sdk "
                   f"runtime, {model.name})")
        typer.echo(f"serve: tritonserver --model-repository={output.resolve()}  (its Python "
                   "needs numpy, Pillow and the model's runtime)")
        return
    options = TritonOptions(name=name, max_batch=max_batch, instances=instances,
                            dynamic_batching=dynamic_batching, kind=kind,  # type: ignore[arg-type]
                            accelerator=trt_accelerator)
    with tempfile.TemporaryDirectory(prefix="cflnet-triton-") as scratch:
        if model.suffix == ".safetensors":
            _threads()
            from cflnet_sdk.export.onnx import export_onnx

            model = export_onnx(model, Path(scratch) / "model.onnx")
        if backend == "ensemble":
            from cflnet_sdk.export.triton_ensemble import write_ensemble_repository

            target = write_ensemble_repository(model, output, options, answer,  # type: ignore[arg-type]
                                               mode)  # type: ignore[arg-type]
            typer.echo(f"wrote the ensemble {target.name} ({name}_pre -> {name}_model -> "
                       f"{name}_post) in {output}")
        else:
            target = write_triton_repository(model, output, options)
            typer.echo(f"wrote {target}/config.pbtxt and {target}/1/")
    typer.echo(f"serve: tritonserver --model-repository={output.resolve()}")


@app.command("check")
def check_command(
    model: Path = typer.Argument(..., help="Exported model: .onnx, .engine/.plan."),
    reference: Path = typer.Option(..., "--reference", help="The checkpoint it came from."),
    images: Path | None = typer.Option(None, "--images", help="Folder of your own images."),
    count: int = typer.Option(16, "--count", help="Images per probe set."),
    atol: float | None = typer.Option(None, "--atol", help="Max abs probability error "
                                      "allowed (default by precision: fp32 1e-4, fp16 1e-2; "
                                      "int8 is judged by mask IoU >= 0.85 and AUC change "
                                      "<= 0.01 on photos unless --atol is given)."),
    rtol: float = typer.Option(0.0, "--rtol", help="Relative tolerance (polygraphy)."),
    max_auc_drop: float | None = typer.Option(None, "--max-auc-drop",
                                              help="Fail if held-out AUC drops more."),
) -> None:
    """Compare an exported model with PyTorch; exit 1 when a tolerance is exceeded.

    Tile-mode models are also compared end to end on tile-mode maps of real photos of odd
    sizes (three of --images at their own sizes, else crops of a packaged photo).
    """
    _threads()
    from dataclasses import replace

    from cflnet_sdk.export import parity
    from cflnet_sdk.training.checkpoint import load_checkpoint

    net = load_checkpoint(reference)
    candidate = parity.open_candidate(model, net.contract)
    contract = candidate.contract
    tolerance = parity.DEFAULT_ATOL.get(candidate.precision, 1e-4) if atol is None else atol
    int8 = candidate.precision == "int8" and atol is None
    probes = [] if int8 else [parity.random_probes(contract)]
    probes += [parity.folder_probes(images, contract, count) if images
               else parity.photo_probes(contract), parity.held_out_probes(contract, count)]
    judge = parity.judge_int8 if int8 else (lambda item: item)
    results = []
    for probe in probes:
        item = judge(parity.compare(parity.torch_runner(net), candidate.runner, probe,
                                    contract.threshold, tolerance, rtol))
        if max_auc_drop is not None and item.auc_diff is not None \
                and -item.auc_diff > max_auc_drop:
            item = replace(item, passed=False)
        results.append(item)
    if contract.mode == "tile":
        results.append(judge(parity.compare_tiled(
            parity.torch_runner(net), candidate.runner,
            parity.odd_size_photos(images, len(parity.ODD_SIZES)), contract, tolerance, rtol,
            candidate.max_batch)))
    rule = parity.INT8_RULE if int8 else f"max abs error <= {tolerance}, rtol {rtol}"
    label = f"{model.name} ({candidate.precision}) vs PyTorch {reference.name} (pass: {rule}):"
    if not _report(results, label):
        raise typer.Exit(1)


def main() -> None:
    run(app)
