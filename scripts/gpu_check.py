"""The GPU check behind scripts/gpu_check.sh (issue 12); run that script, not this file.

Runs the GPU-marked tests, exports the default model and the paper's ResNet-50 network (random
weights) to ONNX fp32/fp16 and TensorRT engines, times every backend present with ``cflnet
benchmark`` at batch 1 and 32 (PyTorch fp16, which that command lacks, with torch.autocast), and
writes gpu_check.json and gpu_check.md. Dry mode (no GPU) runs the same steps with every GPU part
skipped and its reason given, and one CPU stand-in benchmark per model so the benchmark and report
paths run too; a small stand-in replaces ResNet-50 there. A time budget keeps a GPU run inside 8
minutes: steps that no longer fit are skipped and reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "cflnet_sdk" / "models" / "cflnet_default.safetensors"
BATCHES = (1, 32)


@dataclass
class Step:
    name: str
    status: str  # ok | failed | skipped
    seconds: float
    detail: str


@dataclass
class Check:
    """Runs the steps, logs their output, keeps the time budget, collects results."""

    work: Path
    log: Path
    dry: str | None  # why this is a dry run; None on a GPU
    budget_s: float
    start: float = field(default_factory=time.monotonic)
    steps: list[Step] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def left(self) -> float:
        return self.budget_s - (time.monotonic() - self.start)

    def skip(self, name: str, reason: str) -> None:
        self.steps.append(Step(name, "skipped", 0.0, reason))
        print(f"-- {name}: skipped: {reason}", flush=True)

    def run(self, name: str, argv: list[str], timeout: float, need: float = 20.0) -> bool:
        """Run one command (output to the log); False when it failed, timed out or was skipped."""
        if self.left() < need:
            self.skip(name, f"time budget: {self.left():.0f} s of {self.budget_s:.0f} s left")
            return False
        print(f"-- {name}: {' '.join(argv)}", flush=True)
        began = time.monotonic()
        with self.log.open("a") as log:
            log.write(f"\n== {name}: {' '.join(argv)}\n")
            log.flush()
            try:
                done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                      timeout=min(timeout, max(self.left(), 1.0)), check=False)
                status = "ok" if done.returncode == 0 else "failed"
                detail = "" if done.returncode == 0 else f"exit {done.returncode}, see the log"
            except subprocess.TimeoutExpired:
                status, detail = "failed", f"timed out after {timeout:.0f} s"
        self.steps.append(Step(name, status, time.monotonic() - began, detail))
        print(f"   {status} in {time.monotonic() - began:.1f} s {detail}", flush=True)
        return status == "ok"


def tool(name: str) -> str:
    """A console script of this environment (beside the interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def environment(dry: str | None) -> dict[str, Any]:
    """Versions and devices, and which backends can run here (a reason for each that cannot)."""
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine()}
    if shutil.which("nvidia-smi"):
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True,
                               check=False)
        env["gpu"] = query.stdout.strip() or query.stderr.strip()
    missing: dict[str, str] = {}
    try:
        import torch

        env["torch"] = torch.__version__
        if dry or not torch.cuda.is_available():
            missing["torch-cuda"] = dry or "torch sees no CUDA device"
    except ImportError as exc:
        missing["torch-cuda"] = f"torch is not installed ({exc})"
    try:
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
        providers = onnxruntime.get_available_providers()
        env["onnxruntime_providers"] = providers
        if "CUDAExecutionProvider" not in providers:
            missing["onnxruntime-cuda"] = ("onnxruntime has no CUDAExecutionProvider: install "
                                           "onnxruntime-gpu instead of onnxruntime")
        elif dry:
            missing["onnxruntime-cuda"] = dry
    except ImportError as exc:
        missing["onnxruntime-cuda"] = f"onnxruntime is not installed ({exc})"
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
        if dry:
            missing["tensorrt"] = dry
    except ImportError as exc:
        missing["tensorrt"] = (f"tensorrt is not installed ({exc}); pip install "
                               "'cflnet-sdk[tensorrt]' (its libraries come from NVIDIA's index)")
    for module in ("onnxslim", "polygraphy"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = None
    env["missing"] = missing
    return env


def write_network(path: Path, dry: bool) -> Path:
    """The paper's ResNet-50 CFL-Net at 256x256 with random weights (dry: a small stand-in)."""
    from cflnet_sdk.contract import Contract
    from cflnet_sdk.training.checkpoint import save_checkpoint
    from cflnet_sdk.training.config import CFLNetConfig
    from cflnet_sdk.training.model import CFLNet

    config = (CFLNetConfig(backbone="resnet18", aspp_channels=64, embedding_dim=32) if dry
              else CFLNetConfig())
    size = 64 if dry else 256
    return save_checkpoint(CFLNet(config).eval(), path, contract=Contract(size, size))


def contract_of(checkpoint: Path) -> Any:
    """The contract in a checkpoint's metadata, without reading its weights."""
    from safetensors import safe_open

    from cflnet_sdk.contract import Contract
    from cflnet_sdk.metadata import CONTRACT_KEY

    with safe_open(str(checkpoint), "np") as handle:
        return Contract.from_json(handle.metadata()[CONTRACT_KEY])


def torch_fp16(checkpoint: Path, model: str, iterations: int) -> list[dict[str, Any]]:
    """Model latency in fp16 autocast, measured like ``cflnet benchmark``'s torch backend
    (numpy batch to the GPU, forward, probability back to the host)."""
    import numpy as np
    import torch

    from cflnet_sdk.training.checkpoint import load_checkpoint
    from cflnet_sdk.training.model import CFLNetInference

    network = CFLNetInference(load_checkpoint(checkpoint, map_location="cuda")).eval()
    contract = contract_of(checkpoint)
    rows = []
    for batch in BATCHES:
        x = np.random.default_rng(0).standard_normal(
            (batch, contract.channels, *contract.size)).astype(np.float32)
        times = []
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
            for i in range(iterations + 3):
                began = time.perf_counter()
                network(torch.from_numpy(x).to("cuda"))[:, 0].float().cpu()
                if i >= 3:
                    times.append(time.perf_counter() - began)
        ms = np.asarray(times) * 1000.0
        rows.append({"model": model, "backend": "torch", "precision": "fp16", "device": "cuda:0",
                     "batch_size": batch, "size": contract.height,
                     "latency_p50": float(np.median(ms)), "latency_min": float(ms.min()),
                     "throughput": batch * 1000.0 / float(np.median(ms)),
                     "note": "torch.autocast fp16, model only (cflnet benchmark has no fp16)"})
    return rows


def benchmark(check: Check, name: str, model: str, backend: str, precision: str, path: Path,
              size: int, device: str, batches: str, iterations: int) -> None:
    """One ``cflnet benchmark`` run; its rows join the report."""
    out = check.work / f"bench-{model}-{backend}-{precision}-{device}.json"
    if not check.run(name, [tool("cflnet"), "benchmark", "--model", str(path), "--backend",
                            backend, "--device", device, "--batch-sizes", batches, "--size",
                            str(size), "--warmup", "2", "--iterations", str(iterations),
                            "--json", str(out)], timeout=150):
        return
    for row in json.loads(out.read_text()):
        row.update(model=model, precision=precision)
        if check.dry:
            row["note"] = "dry run: CPU stand-in, not a measurement"
        elif backend == "onnxruntime" and "CUDAExecutionProvider" not in row["providers"]:
            check.steps[-1].status = "failed"
            check.steps[-1].detail = f"onnxruntime fell back to {row['providers']}"
        check.rows.append(row)


def check_model(check: Check, env: dict[str, Any], model: str, checkpoint: Path) -> None:
    """Export one model and benchmark it on every backend present (cheapest first, so a tight
    budget drops the slow TensorRT builds and ONNX Runtime last)."""
    missing, dry = env["missing"], check.dry
    contract = contract_of(checkpoint)
    size, shape = contract.height, f"x{contract.channels}x{contract.height}x{contract.width}"
    batches = ",".join(map(str, BATCHES))
    onnx = {p: check.work / f"{model}-{p}.onnx" for p in ("fp32", "fp16")}
    options = [] if env["onnxslim"] else ["--no-simplify"]
    options += [] if env["polygraphy"] and model == "default" and not dry else ["--no-verify"]
    for precision, path in onnx.items():
        check.run(f"export {model} onnx {precision}",
                  [tool("cflnet-export"), "onnx", str(checkpoint), "-o", str(path),
                   "--precision", precision, *options], timeout=180, need=60)
    if dry:  # one CPU stand-in so the benchmark and report paths run
        benchmark(check, f"benchmark {model} onnxruntime fp32 (CPU stand-in)", model,
                  "onnxruntime", "fp32", onnx["fp32"], size, "cpu", "1,2", 1)
    if "torch-cuda" in missing:
        check.skip(f"benchmark {model} torch fp32", missing["torch-cuda"])
        check.skip(f"benchmark {model} torch fp16", missing["torch-cuda"])
    else:
        benchmark(check, f"benchmark {model} torch fp32", model, "torch", "fp32", checkpoint,
                  size, "cuda", batches, 10)
        out = check.work / f"bench-{model}-torch-fp16.json"
        if check.run(f"benchmark {model} torch fp16", [
                sys.executable, __file__, "--torch-fp16", str(checkpoint), "--model-name", model,
                "--json", str(out)], timeout=120):
            check.rows.extend(json.loads(out.read_text()))
    for precision, path in onnx.items():
        name = f"TensorRT {model} {precision}"
        if "tensorrt" in missing or not path.is_file():
            check.skip(f"{name}: engine and benchmark",
                       missing.get("tensorrt", f"no {path.name}"))
            continue
        engine = path.with_suffix(".engine")
        if check.run(f"{name}: cflnet-export engine", [
                tool("cflnet-export"), "engine", str(path), "-o", str(engine), "--min-shape",
                f"1{shape}", "--opt-shape", f"{BATCHES[-1]}{shape}", "--max-shape",
                f"{BATCHES[-1]}{shape}", "--timing-cache", str(check.work / "trt.cache")],
                timeout=200, need=90):
            benchmark(check, f"{name}: benchmark", model, "tensorrt", precision, engine, size,
                      "cuda", batches, 10)
    for precision, path in onnx.items():
        name = f"benchmark {model} onnxruntime {precision}"
        if "onnxruntime-cuda" in missing or not path.is_file():
            check.skip(name, missing.get("onnxruntime-cuda", f"no {path.name}"))
        else:
            benchmark(check, name, model, "onnxruntime", precision, path, size, "cuda",
                      batches, 10)


def gpu_tests(check: Check) -> None:
    pytest = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider"]
    if check.dry:
        if check.run("pytest -m gpu (collect only)", [*pytest, "--collect-only", "-q"], 120):
            check.steps[-1].detail = f"collected, not run: {check.dry}"
    else:
        check.run("pytest -m gpu", [*pytest, "-q", "-rs"], timeout=240, need=60)


TABLE = ("| model | backend | precision | device | batch | p50 ms | min ms | img/s | "
         "e2e ms/img | GPU MB | note |\n|---|---|---|---|---|---|---|---|---|---|---|")


def result_line(r: dict[str, Any]) -> str:
    def number(key: str, digits: int) -> str:
        return "" if r.get(key) is None else f"{r[key]:.{digits}f}"

    return (f"| {r['model']} | {r['backend']} | {r['precision']} | {r.get('device', '')} | "
            f"{r['batch_size']} | {number('latency_p50', 2)} | {number('latency_min', 2)} | "
            f"{number('throughput', 1)} | {number('e2e_per_image', 2)} | "
            f"{number('gpu_memory_mb', 0)} | {r.get('note', '')} |")


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: what ran, what was missing and why, and the timings."""
    env = report["environment"]
    lines = [f"# GPU check ({'dry run' if report['dry_run'] else 'GPU run'})", "",
             f"- date: {report['date']}", f"- command: `{report['command']}`",
             f"- GPU: {env.get('gpu') or 'none'}",
             "- versions: " + ", ".join(f"{k} {env.get(k)}" for k in (
                 "python", "torch", "onnxruntime", "tensorrt", "onnxslim", "polygraphy")),
             f"- dry run: {report['dry_run'] or 'no'}", "", "## Missing backends", ""]
    lines += [f"- **{name}**: {why}" for name, why in env["missing"].items()] or ["- none"]
    lines += ["", "## Steps", "", "| step | status | seconds | detail |", "|---|---|---|---|"]
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.1f} | {s['detail']} |"
              for s in report["steps"]]
    lines += ["", "## Timings (model latency per batch; e2e: predict on a 1024x768 JPEG)", "",
              TABLE]
    lines += [result_line(r) for r in report["results"]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "gpu-check")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp"))
                        / "cflnet-gpu-check")
    parser.add_argument("--dry-run", metavar="REASON", help="skip the GPU parts, saying why")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds for all steps (install and report come on top)")
    parser.add_argument("--command", default="bash scripts/gpu_check.sh")
    parser.add_argument("--torch-fp16", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-name", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_fp16:  # one step of a run, in its own process
        rows = torch_fp16(args.torch_fp16, args.model_name, iterations=10)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu_check.log"
    log.write_text("")
    check = Check(args.work, log, args.dry_run, args.budget)
    env = environment(args.dry_run)
    print(json.dumps(env, indent=2), flush=True)
    gpu_tests(check)
    check_model(check, env, "default", DEFAULT_MODEL)
    paper = "paper-standin" if args.dry_run else "paper-resnet50"
    if check.left() < 120:
        check.skip(f"{paper}: all steps", f"time budget: {check.left():.0f} s left")
    else:
        began = time.monotonic()
        network = write_network(args.work / f"{paper}.safetensors", bool(args.dry_run))
        check.steps.append(Step(f"write {paper} (random weights)", "ok",
                                time.monotonic() - began,
                                "dry run: small stand-in (resnet18, 64x64)" if args.dry_run
                                else "the paper's ResNet-50 network, 256x256"))
        check_model(check, env, paper, network)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": args.command, "dry_run": args.dry_run, "environment": env,
              "steps": [asdict(s) for s in check.steps], "results": check.rows}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "gpu_check.md").write_text(markdown(report))
    failed = [s.name for s in check.steps if s.status == "failed"]
    print(f"wrote {args.out}/gpu_check.json and gpu_check.md; missing backends: "
          f"{', '.join(env['missing']) or 'none'}; failed steps: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
