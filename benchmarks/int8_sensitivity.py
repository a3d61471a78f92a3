"""Per-layer INT8 sensitivity: which layers cost accuracy when quantized (docs/benchmarks.md).

    python benchmarks/int8_sensitivity.py CHECKPOINT --calib DIR [--count 64] [--probes 32]
        [--target cpu] [--method minmax] [--json out.json]

Quantizes the network with every layer group, then every convolution, kept in float32 in turn
(``Int8Recipe``), and measures how far the probability maps move from the fp32 file's on real
photos of ``--calib`` that calibration did not use. No labels are involved: validation images
stay out of the choice of what to keep in float32, and are only used to measure the result
(``cflnet variants``). A layer whose float32 copy removes much of the error is worth keeping.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np


def probe_inputs(folder: Path, used: list[Path], count: int, contract) -> list[np.ndarray]:
    """Model inputs of ``count`` photos of ``folder`` that calibration did not use."""
    from cflnet_sdk.export.calibration import PhotoFolder, model_inputs

    source, inputs, taken = PhotoFolder(folder), [], 0
    for path, rgb in source.photos(len(source.candidates)):
        if taken == count:
            break
        if path not in used:
            inputs += model_inputs(rgb, contract, tiles=1)
            taken += 1
    return inputs


def deviation(proto, inputs: list[np.ndarray], reference: list[np.ndarray],
              threshold: float) -> dict[str, float]:
    """Mean absolute probability error and mean mask IoU of ``proto`` against ``reference``."""
    import onnxruntime as ort

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    errors, ious = [], []
    for x, want in zip(inputs, reference, strict=True):
        got = session.run(None, {"image": x})[0]
        errors.append(float(np.abs(got - want).mean()))
        a, b = got >= threshold, want >= threshold
        union = np.count_nonzero(a | b)
        ious.append(1.0 if union == 0 else np.count_nonzero(a & b) / union)
    return {"mean_abs_error": float(np.mean(errors)), "mask_iou": float(np.mean(ious))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--calib", type=Path, required=True)
    parser.add_argument("--count", type=int, default=64)
    parser.add_argument("--probes", type=int, default=32)
    parser.add_argument("--target", default="cpu")
    parser.add_argument("--method", default="minmax")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import onnx
    import onnxruntime as ort

    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.calibration import collect_calibration
    from cflnet_sdk.export.onnx import build_onnx
    from cflnet_sdk.export.precision import FLOAT_GROUPS, Int8Recipe, float32_tail, quantize_int8

    fp32 = build_onnx(args.checkpoint)
    contract = Contract.from_json(next(p.value for p in fp32.metadata_props
                                       if p.key == "cflnet.contract"))
    calibration = collect_calibration(contract, args.calib, args.count)
    inputs = probe_inputs(args.calib, calibration.photos, args.probes, contract)
    session = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"])
    reference = [session.run(None, {"image": x})[0] for x in inputs]
    base = Int8Recipe(method=args.method, keep_float=())

    def measure(recipe: Int8Recipe) -> dict[str, float]:
        copy = onnx.ModelProto()
        copy.CopyFrom(fp32)
        quantized = quantize_int8(copy, calibration.inputs, args.target, recipe)
        return deviation(quantized, inputs, reference, contract.threshold)

    rows = [{"kept in float32": "nothing (all quantized)", **measure(base)}]
    print(json.dumps(rows[-1]), flush=True)
    for group in FLOAT_GROUPS:
        rows.append({"kept in float32": f"group {group}",
                     **measure(replace(base, keep_float=(group,)))})
        print(json.dumps(rows[-1]), flush=True)
    tail = set(float32_tail(fp32))
    for node in (n.name for n in fp32.graph.node if n.op_type == "Conv" and n.name not in tail):
        rows.append({"kept in float32": node, **measure(replace(base, keep_nodes=(node,)))})
        print(json.dumps(rows[-1]), flush=True)
    rows[1:] = sorted(rows[1:], key=lambda r: r["mean_abs_error"])
    print(f"\n{len(inputs)} probe inputs, {len(calibration.inputs)} calibration inputs, "
          f"{args.target} layout, {args.method}")
    print(f"{'kept in float32':<60} {'mean abs error':>14} {'mask IoU':>9}")
    for row in rows:
        print(f"{row['kept in float32']:<60} {row['mean_abs_error']:>14.5f} "
              f"{row['mask_iou']:>9.4f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
