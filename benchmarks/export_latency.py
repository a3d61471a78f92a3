"""ONNX Runtime CPU latency of the exported fp32 / fp16 / int8 variants (docs/benchmarks.md).

    python benchmarks/export_latency.py [--checkpoint CKPT] [--size 256] [--threads 2]

Without a checkpoint the paper's ResNet-50 network is built with random weights (latency
does not depend on the weights). Variants are timed round-robin, so load from other
processes affects all of them alike; the table gives the median and the minimum.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calib-count", type=int, default=32)
    args = parser.parse_args()

    import onnx
    import torch

    from cflnet_sdk.contract import Contract
    from cflnet_sdk.export.calibration import collect_calibration
    from cflnet_sdk.export.onnx import build_onnx, save_onnx
    from cflnet_sdk.export.precision import make_variant
    from cflnet_sdk.training.model import CFLNet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = args.checkpoint or CFLNet().eval()
    folder = Path(tempfile.mkdtemp(prefix="cflnet-bench-"))
    fp32 = build_onnx(model, size=args.size)
    paths = {"fp32": save_onnx(fp32, folder / "fp32.onnx")}
    contract = Contract.from_json(next(p.value for p in fp32.metadata_props
                                       if p.key == "cflnet.contract"))
    calibration = collect_calibration(contract, None, args.calib_count)
    for name, precision, target in (("fp16", "fp16", None), ("int8 (tensorrt layout)", "int8",
                                    "tensorrt"), ("int8 (cpu layout)", "int8", "cpu")):
        start = time.perf_counter()
        variant = make_variant(onnx.load(str(paths["fp32"])), precision,
                               calibration=calibration, int8_target=target or "tensorrt")
        paths[name] = save_onnx(variant, folder / f"{name.split()[0]}-{target}.onnx")
        print(f"made {name} in {time.perf_counter() - start:.0f} s", flush=True)

    sessions = {name: session(path, args.threads) for name, path in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size), np.float32)
    reference = sessions["fp32"].run(None, {"image": x})[0]
    times: dict[str, list[float]] = {name: [] for name in sessions}
    errors = {}
    for name, sess in sessions.items():
        errors[name] = float(np.abs(sess.run(None, {"image": x})[0] - reference).max())
    for _ in range(args.rounds):
        for name, sess in sessions.items():
            start = time.perf_counter()
            sess.run(None, {"image": x})
            times[name].append(time.perf_counter() - start)
    print(f"\nONNX Runtime CPU, {args.size}x{args.size}, batch 1, {args.threads} threads, "
          f"{args.rounds} rounds")
    print("| variant | median ms | min ms | file MB | max abs diff vs fp32 (random input) |")
    print("|---|---|---|---|---|")
    for name, samples in times.items():
        print(f"| {name} | {np.median(samples) * 1e3:.0f} | {min(samples) * 1e3:.0f} | "
              f"{paths[name].stat().st_size / 1e6:.0f} | {errors[name]:.2g} |")


if __name__ == "__main__":
    main()
