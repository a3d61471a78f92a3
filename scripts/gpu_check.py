"""The GPU check behind scripts/gpu_check.sh (issues 12 and 26); run that script, not this file.

A lent GPU machine gives minutes, so the steps run in order of what they prove, each within a
time limit that is its share of the budget (180 s of work by default): the environment; the
PyTorch CUDA backend on the default model and on the paper's ResNet-50 network (parity with the
CPU; fp32, TF32, fp16 and bf16 latency at batch 1/8/32; tile mode on a 12 MP photo); training
steps with AMP; a DDP process group of size 1; ``pytest -m gpu``; then, only where TensorRT or
ONNX Runtime's CUDA provider import, ONNX exports, engines and their benchmarks. The PyTorch
steps run in a child process (scripts/gpu_probes.py) that the check stops at a step's limit.
Every result joins gpu_check.json and gpu_check.md as it finishes, every skip says why, and a
run in which no GPU test ran is never "ok". Without CUDA (or with --dry-run) it all runs on the
CPU with small stand-ins: the dry run goes through every path but the GPU's own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gpu_probes import budget_skip
from gpu_report import Report, StepResult, slack

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent
CHECKOUT = [sys.executable, str(SCRIPTS / "checkout.py")]
ENGINE_BATCHES = (1, 8, 32)


@dataclass(frozen=True)
class Step:
    name: str
    limit_s: float  # its share of the budget on a 16-core GPU machine; stopped there
    accelerated: bool = False  # only where TensorRT or ONNX Runtime's CUDA provider import


# What a lent machine (PyTorch, no TensorRT) runs: the limits add up to the default budget.
PROBES = (Step("environment", 20), Step("torch default model", 30),
          Step("torch paper ResNet-50", 40), Step("training with AMP", 25),
          Step("DDP process group", 20))
GPU_TESTS = Step("pytest -m gpu", 45)
DEFAULT_BUDGET = sum(s.limit_s for s in (*PROBES, GPU_TESTS))
# Only where TensorRT or ONNX Runtime's CUDA provider import (raise --budget there).
EXPORT = Step("ONNX export fp32/fp16", 90, accelerated=True)
ENGINE_LIMIT, BENCHMARK_LIMIT = 120.0, 40.0


@dataclass
class Check:
    """Runs steps within the budget, logs their output, and reports each as it ends."""

    report: Report
    work: Path
    log: Path
    budget_end: float  # time.time() at which the budget is spent
    cache: Path  # kept between runs: TensorRT's timing cache
    files: list[dict[str, str]] = field(default_factory=list)  # ONNX files the export wrote
    probe_script: Path = SCRIPTS / "gpu_probes.py"  # the child's program (its protocol above)

    @property
    def dry(self) -> str | None:
        return self.report.dry_run

    def left(self) -> float:
        return self.budget_end - time.time()

    def allowed(self, step: Step) -> float:
        """The seconds ``step`` may take here: its limit, or DRY_SLACK times it in a dry run."""
        return step.limit_s * slack(self.dry)

    def record(self, step: Step, status: str, seconds: float, detail: str) -> None:
        self.report.add_step(StepResult(step.name, status, round(seconds, 2), step.limit_s,
                                        detail, step.accelerated))
        print(f"-- {step.name}: {status} in {seconds:.1f} s {detail}", flush=True)

    def step(self, step: Step, action: Callable[[float], tuple[str, str]]) -> str:
        """Run ``action(timeout)`` if the step fits the budget; its (status, detail), or the
        exception it raised, joins the report at once. Returns the status."""
        reason = budget_skip(self.allowed(step), self.left())
        if reason:
            self.record(step, "skipped", 0.0, reason)
            return "skipped"
        began = time.monotonic()
        try:
            status, detail = action(max(min(self.allowed(step), self.left()), 1.0))
        except Exception as exc:
            status, detail = "failed", f"{type(exc).__name__}: {exc}"
        self.record(step, status, time.monotonic() - began, detail)
        return status

    def command(self, name: str, argv: list[str], timeout: float) -> tuple[int | None, str]:
        """Run one command, its output to the log; (exit code, or None on time-out; output)."""
        print(f"   {' '.join(argv)}", flush=True)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                                  timeout=timeout, check=False)
            code, output = done.returncode, done.stdout + done.stderr
        except subprocess.TimeoutExpired as exc:
            code, output = None, text_of(exc.stdout) + text_of(exc.stderr)
        with self.log.open("a") as log:
            log.write(f"\n== {name}: {' '.join(argv)}\n{output}")
        return code, output

    def probes(self, steps: tuple[Step, ...]) -> None:
        """Run probe steps in child processes; a child that hangs past a step's limit is
        stopped and one that dies is replaced, each costing that step alone."""
        pending = list(steps)
        while pending:
            while pending and (reason := budget_skip(self.allowed(pending[0]), self.left())):
                self.record(pending[0], "skipped", 0.0, reason)
                pending.pop(0)
            if pending:
                pending = self.probe_child(pending)

    def probe_child(self, pending: list[Step]) -> list[Step]:
        """One child for the pending probes; returns those it left unrun."""
        records = self.work / f"probes-{time.monotonic_ns()}.jsonl"
        argv = [sys.executable, str(self.probe_script), "--records", str(records),
                "--work", str(self.work), "--budget-end", str(self.budget_end),
                *(["--dry-run", self.dry] if self.dry else []),
                *(f"{s.name}={self.allowed(s):g}" for s in pending)]
        print(f"-- probes: {', '.join(s.name for s in pending)}", flush=True)
        with self.log.open("a") as log:
            log.write(f"\n== probes: {' '.join(argv)}\n")
            log.flush()
            child = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        since, seen, started = time.monotonic(), 0, len(pending)
        while pending:
            exited = child.poll() is not None  # before reading: its last records are read too
            text = records.read_text() if records.exists() else ""
            lines = text.split("\n")[:-1]  # the last may be half written
            for line in lines[seen:]:
                since = self.apply(json.loads(line), pending, since)
            seen = len(lines)
            if not pending:
                break
            step = pending[0]
            elapsed = time.monotonic() - since
            if exited:
                detail = (f"the probe process ended (exit {child.returncode}) during this step; "
                          "see gpu_check.log")
                if len(pending) == started:  # it never finished a step: do not start another
                    for left in pending:
                        self.record(left, "failed", elapsed, detail)
                    return []
                self.record(step, "failed", elapsed, detail)
                return pending[1:]
            if elapsed > min(self.allowed(step), max(self.left(), 0.0) + 1.0):
                child.kill()
                child.wait()
                self.record(step, "failed", elapsed, f"stopped at its limit after {elapsed:.0f} s")
                return pending[1:]
            time.sleep(0.1)
        try:
            child.wait(timeout=10)  # its steps are done; a hang on the way out costs no more
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return pending

    def apply(self, record: dict[str, Any], pending: list[Step], since: float) -> float:
        """Take one record of the probe child into the report; returns when the current
        step's clock started (an ended step starts the next one's)."""
        if "fact" in record:
            facts = record["fact"]
            if "dry_run" in facts:
                self.report.dry_run = facts.pop("dry_run")
            self.report.environment.update(facts)
            self.report.save()
        elif "row" in record:
            self.report.add_row(record["row"])
        elif "file" in record:
            self.files.append(record["file"])
        elif "end" in record:
            step = pending.pop(0)
            assert step.name == record["end"], (step.name, record)
            now = time.monotonic()
            self.record(step, record["status"], now - since, record["detail"])
            return now
        return since


def text_of(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


# -- environment --------------------------------------------------------------------------------
def host_facts() -> dict[str, Any]:
    """What the host says without importing torch: the GPU and the wheels carried in."""
    facts: dict[str, Any] = {}
    try:
        query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                "--format=csv,noheader"], capture_output=True, text=True,
                               timeout=30, check=False)
        facts["gpu"] = query.stdout.strip() or query.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        facts["gpu"] = None
        facts["nvidia_smi"] = str(exc)
    carried = carried_wheels()
    if carried:
        facts["carried_wheels"] = carried
    return facts


def carried_wheels() -> dict[str, str]:
    """Distributions in $PYTHONPATH folders (where gpu_check.sh installs carried wheels)."""
    from importlib.metadata import distributions

    folders = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {d.metadata["Name"]: d.version for d in distributions(path=folders)} if folders \
        else {}


def missing_backends(env: dict[str, Any], dry: str | None) -> dict[str, str]:
    """Each GPU backend that cannot run here, with the reason."""
    missing: dict[str, str] = {}
    if "torch" not in env:
        missing["torch-cuda"] = "the environment step did not report torch (see the log)"
    elif dry:
        missing["torch-cuda"] = dry
    providers = env.get("onnxruntime_providers")
    if providers is None:
        missing["onnxruntime-cuda"] = (f"onnxruntime does not import "
                                       f"({env.get('onnxruntime_error', 'not reported')})")
    elif "CUDAExecutionProvider" not in providers:
        missing["onnxruntime-cuda"] = ("onnxruntime has no CUDAExecutionProvider: install "
                                       "onnxruntime-gpu in its place (they share one folder)")
    elif dry:
        missing["onnxruntime-cuda"] = dry
    if not env.get("tensorrt"):
        why = env.get("tensorrt_error", "not reported")
        missing["tensorrt"] = (f"tensorrt does not import ({why}); pip install "
                               "'cflnet-sdk[tensorrt]' (its libraries come from NVIDIA's index) "
                               "or use JetPack's")
    elif dry:
        missing["tensorrt"] = dry
    return missing


# -- pytest -m gpu -------------------------------------------------------------------------------
def gpu_tests(check: Check, timeout: float) -> tuple[str, str]:
    """``pytest -m gpu``; in a dry run only collected (they would all skip)."""
    junit = check.work / "gpu-tests.xml"
    junit.unlink(missing_ok=True)
    argv = [*CHECKOUT, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-q", "-rs",
            f"--junitxml={junit}", *(["--collect-only"] if check.dry else [])]
    code, output = check.command(GPU_TESTS.name, argv, timeout)
    if code is None:
        return "failed", f"timed out after {timeout:.0f} s"
    if check.dry:
        found = re.search(r"(\d+)(?:/\d+)? tests? collected", output)
        if code != 0 or not found:
            return "failed", f"collecting the GPU tests failed (exit {code}); see the log"
        return "skipped", f"{check.dry}: {found.group(1)} GPU tests collected, not run"
    return judge_junit(junit, code)


def judge_junit(junit: Path, code: int) -> tuple[str, str]:
    """(status, detail) of a pytest run from its JUnit XML: "ok" only if a test ran and none
    failed; a run in which every test skipped is "skipped", with the skip reasons."""
    if not junit.is_file():
        return "failed", f"pytest wrote no report (exit {code}); see the log"
    suite = ElementTree.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    reasons = sorted({s.get("message", "") for s in suite.iter("skipped")})
    ran = counts["tests"] - counts["skipped"]
    why = f" (skipped: {'; '.join(reasons)})" if reasons else ""
    if counts["failures"] or counts["errors"] or code not in (0, 5):
        return "failed", (f"{counts['failures']} failed, {counts['errors']} errors, {ran} ran "
                          f"(exit {code}); see the log{why}")
    if ran == 0:
        return "skipped", f"no GPU test ran: {counts['skipped']} skipped{why}"
    return "ok", f"{ran} passed, {counts['skipped']} skipped{why}"


# -- ONNX, TensorRT, ONNX Runtime ------------------------------------------------------------
def benchmark(check: Check, file: dict[str, str], path: str, backend: str, device: str,
              batches: tuple[int, ...], iterations: int, timeout: float) -> tuple[str, str]:
    """One ``cflnet benchmark`` run; its rows join the report."""
    out = check.work / f"bench-{Path(path).stem}-{backend}-{device}.json"
    out.unlink(missing_ok=True)
    code, _ = check.command(f"benchmark {path}", [
        *CHECKOUT, "cflnet", "benchmark", "--model", path, "--backend", backend, "--device",
        device, "--batch-sizes", ",".join(map(str, batches)), "--size",
        file["shape"].split("x")[1], "--warmup", "2",
        "--iterations", str(iterations), "--json", str(out)], timeout)
    if code != 0:
        return "failed", "timed out" if code is None else f"exit {code}; see the log"
    rows = json.loads(out.read_text())
    for row in rows:
        row.update(table="latency", model=file["model"], precision=file["precision"])
        if check.dry:
            row["note"] = "dry run: CPU stand-in, not a measurement"
        check.report.add_row(row)
    fallback = [r["providers"] for r in rows if backend == "onnxruntime" and device == "cuda"
                and "CUDAExecutionProvider" not in r["providers"]]
    if fallback:
        return "failed", f"onnxruntime fell back to {fallback[0]}"
    return "ok", f"{len(rows)} rows"


def engine(check: Check, file: dict[str, str], built: Path, timeout: float) -> tuple[str, str]:
    """``cflnet-export engine`` with a batch profile over ENGINE_BATCHES (opt: the largest);
    TF32 stays off, as for any user's fp32 engine."""
    low, high = (f"{n}x{file['shape']}" for n in (ENGINE_BATCHES[0], ENGINE_BATCHES[-1]))
    code, _ = check.command(f"engine {built.name}", [
        *CHECKOUT, "cflnet-export", "engine", file["path"], "-o", str(built), "--min-shape",
        low, "--opt-shape", high, "--max-shape", high, "--timing-cache",
        str(check.cache / "trt.cache")], timeout)
    if code != 0:
        return "failed", "timed out" if code is None else f"exit {code}; see the log"
    return "ok", f"{built.name}: batch {ENGINE_BATCHES[0]}..{ENGINE_BATCHES[-1]}, TF32 off"


def accelerated_steps(check: Check, missing: dict[str, str]) -> None:
    """Exports, TensorRT engines and benchmarks, ONNX Runtime CUDA benchmarks: each only where
    its backend imports (a dry run: the exports and one CPU stand-in benchmark)."""
    check.probes((EXPORT,))
    for backend, label in (("tensorrt", "TensorRT engines and benchmarks"),
                           ("onnxruntime-cuda", "ONNX Runtime CUDA benchmarks")):
        if backend in missing:
            check.record(Step(label, 0, accelerated=True), "skipped", 0.0, missing[backend])
    for file in check.files:
        name = f"{file['model']} {file['precision']}"
        if "tensorrt" not in missing:
            built = check.work / f"{Path(file['path']).stem}.engine"
            if check.step(Step(f"TensorRT engine {name}", ENGINE_LIMIT, accelerated=True),
                          lambda t, f=file, e=built: engine(check, f, e, t)) == "ok":
                check.step(Step(f"TensorRT benchmark {name}", BENCHMARK_LIMIT, accelerated=True),
                           lambda t, f=file, e=built: benchmark(
                               check, f, str(e), "tensorrt", "cuda", ENGINE_BATCHES, 10, t))
        if "onnxruntime-cuda" not in missing:
            check.step(Step(f"ONNX Runtime CUDA benchmark {name}", BENCHMARK_LIMIT,
                            accelerated=True),
                       lambda t, f=file: benchmark(check, f, f["path"], "onnxruntime", "cuda",
                                                   ENGINE_BATCHES, 10, t))
    if check.dry and check.files:  # the benchmark and report paths, on the smallest file
        file = check.files[-1]
        check.step(Step(f"ONNX Runtime CPU stand-in {file['model']} {file['precision']}",
                        BENCHMARK_LIMIT, accelerated=True),
                   lambda t: benchmark(check, file, file["path"], "onnxruntime", "cpu",
                                       (1, 2), 1, t))


# -- the run ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "gpu-check")
    parser.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp"))
                        / "cflnet-gpu-check", help="scratch folder (each run's files are "
                        "removed at its end; TensorRT's timing cache stays)")
    parser.add_argument("--dry-run", metavar="WHY", help="run on the CPU, saying why")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                        help="seconds of work for all steps (default: what a lent machine "
                             "runs; raise it where TensorRT is installed)")
    parser.add_argument("--command", default="bash scripts/gpu_check.sh")
    args = parser.parse_args(argv)
    if args.dry_run:  # stand-ins, not measurements: one thread keeps a shared CPU from thrashing
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="run-", dir=args.work) as work:
        return run(args, Path(work))


def run(args: argparse.Namespace, work: Path) -> int:
    """Every step in turn; ``work`` holds this run's models and exports."""
    report = Report(args.out, args.command, datetime.now(timezone.utc).isoformat(
        timespec="seconds"), args.budget, dry_run=args.dry_run, environment=host_facts())
    report.save()
    log = args.out / "gpu_check.log"
    log.write_text("")
    check = Check(report, work, log, time.time() + args.budget * slack(args.dry_run), args.work)
    check.probes(PROBES)
    missing = missing_backends(report.environment, report.dry_run)
    report.environment["missing"] = missing
    report.save()
    check.step(GPU_TESTS, lambda timeout: gpu_tests(check, timeout))
    if report.dry_run or "tensorrt" not in missing or "onnxruntime-cuda" not in missing:
        accelerated_steps(check, missing)
    else:
        check.record(Step("exports, engines, TensorRT and ONNX Runtime CUDA benchmarks", 0,
                          accelerated=True), "skipped", 0.0,
                     f"neither imports here: {missing['tensorrt']}; {missing['onnxruntime-cuda']}")
    failed = [s.name for s in report.steps if s.status == "failed"]
    print(f"wrote {args.out}/gpu_check.json and gpu_check.md; missing backends: "
          f"{', '.join(missing) or 'none'}; failed steps: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
