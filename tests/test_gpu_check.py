"""scripts/gpu_check.sh, the one command for a GPU machine (issues 12 and 26), checked on a CPU.

The whole dry run (every step on the CPU with small stand-ins) runs end to end; the GPU path's
plumbing runs with a stub ``nvidia-smi``, a carried wheel and no budget; the report survives a
step that raises and a probe child that hangs or dies; pytest results are judged from real
JUnit reports; the checkout runs without an install; fp16 exports need no onnxslim.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
SCRIPT = SCRIPTS / "gpu_check.sh"


def gpu_check_module():
    """scripts/gpu_check.py as a module (its siblings importable, as when it runs)."""
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPTS / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run_script(args: list[str], tmp_path: Path, timeout: float, **env: str
               ) -> subprocess.CompletedProcess:
    environ = {**os.environ, "TMPDIR": str(tmp_path), "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=ROOT, env=environ, timeout=timeout, check=False)


def test_unknown_option_prints_usage(tmp_path):
    done = run_script(["--bogus"], tmp_path, 30)
    assert done.returncode == 2 and "usage: bash scripts/gpu_check.sh" in done.stderr


def test_dry_run_goes_through_every_step_within_the_budget(tmp_path):
    out = tmp_path / "report"
    done = run_script(["--dry-run", "--out", str(out)], tmp_path, 300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] and set(report["environment"]["missing"]) == {
        "torch-cuda", "onnxruntime-cuda", "tensorrt"}
    steps = {s["name"]: s for s in report["steps"]}
    statuses = {name: s["status"] for name, s in steps.items()}
    assert "failed" not in statuses.values(), steps
    gpu_check = gpu_check_module()
    for step in (*gpu_check.PROBES, gpu_check.EXPORT):
        assert statuses[step.name] == "ok", steps[step.name]
    assert statuses["pytest -m gpu"] == "skipped"
    assert "GPU tests collected, not run" in steps["pytest -m gpu"]["detail"]
    assert all(steps[name]["detail"] for name, status in statuses.items()
               if status == "skipped"), "a skip must say why"
    # What a lent machine runs fits the budget by construction: each step stops at its limit.
    pytorch = [s for s in report["steps"] if not s["accelerated"]]
    assert sum(s["limit_s"] for s in pytorch) == report["budget_s"] == 180
    rows = report["results"]
    latency = {(r["model"], r["backend"], r["precision"], r["batch_size"]) for r in rows
               if r["table"] == "latency"}
    for model in ("default", "paper-standin"):
        # a precision without fast kernels on this CPU is left out, and the report says so
        ran = {r["precision"] for r in rows if r["table"] == "parity" and r["model"] == model}
        assert {"fp32", "tf32"} <= ran <= {"fp32", "tf32", "fp16", "bf16"}
        for precision in ran:
            assert {(model, "torch", precision, 1), (model, "torch", precision, 2)} <= latency
        left_out = {"fp16", "bf16"} - ran
        step = {"default": "torch default model", "paper-standin": "torch paper ResNet-50"}[model]
        clause = steps[step]["detail"].rpartition("; ")[2]
        assert not left_out or (clause.endswith("not run (no fast kernels on this CPU)")
                                and all(precision in clause for precision in left_out))
        assert {r["verdict"] for r in rows if r["table"] == "parity" and r["model"] == model
                and r["precision"] == "fp32"} == {"pass"}
        assert any(r["table"] == "tile" and r["model"] == model for r in rows)
    assert ("paper-standin", "onnxruntime", "fp16", 2) in latency
    assert {r["path"] for r in rows if r["table"] == "training"} == {
        "train_step", "DDP, gloo, world 1"}
    text = (out / "gpu_check.md").read_text()
    assert "| **PyTorch steps (any GPU machine)** | 180 |" in text
    assert "limits within the 180 s budget" in text and "## Parity with the CPU" in text


def tiny_wheel(folder: Path) -> Path:
    """A real (pure-Python) wheel, as a carried one would be."""
    folder.mkdir()
    wheel = folder / "carried_probe-1.2.3-py3-none-any.whl"
    info = "carried_probe-1.2.3.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("carried_probe/__init__.py", "VALUE = 7\n")
        archive.writestr(f"{info}/METADATA",
                         "Metadata-Version: 2.1\nName: carried-probe\nVersion: 1.2.3\n")
        archive.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                         "Root-Is-Purelib: true\nTag: py3-none-any\n")
        archive.writestr(f"{info}/RECORD", "")
    return wheel


def test_gpu_path_installs_carried_wheels_aside_and_reports_every_skip(tmp_path):
    """A stub nvidia-smi takes the GPU path; with no budget every step is skipped, saying why,
    and the carried wheel is installed into a folder of its own, never into the Python."""
    stub = tmp_path / "bin" / "nvidia-smi"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\necho 'Stub GPU, 0.0, 0 MiB'\n")
    stub.chmod(0o755)
    wheel = tiny_wheel(tmp_path / "wheels")
    out = tmp_path / "report"
    done = run_script(["--out", str(out), "--budget", "0"], tmp_path, 120,
                      PATH=f"{stub.parent}{os.pathsep}{os.environ['PATH']}",
                      CFLNET_WHEELS=str(wheel.parent))
    assert done.returncode == 0, done.stdout + done.stderr
    site = tmp_path / "cflnet-gpu-check-site"
    assert f"installing 1 wheel(s) into {site}" in done.stdout
    assert (site / "carried_probe" / "__init__.py").is_file()
    report = json.loads((out / "gpu_check.json").read_text())
    env = report["environment"]
    assert report["dry_run"] is None and env["gpu"] == "Stub GPU, 0.0, 0 MiB"
    assert env["carried_wheels"] == {"carried-probe": "1.2.3"}
    assert report["steps"] and all(s["status"] == "skipped" and s["detail"]
                                   for s in report["steps"])
    text = (out / "gpu_check.md").read_text()
    for name, why in env["missing"].items():
        assert f"- **{name}**: {why}" in text
    unwritten = subprocess.run([sys.executable, "-c", "import carried_probe"],
                               capture_output=True, check=False)
    assert unwritten.returncode != 0, "the wheel went into this Python"


def new_check(tmp_path: Path, budget: float = 60.0, dry_run: str | None = None, **fields):
    import time

    gpu_check = gpu_check_module()
    from gpu_report import Report

    report = Report(tmp_path / "out", "test", "today", budget, dry_run=dry_run)
    log = tmp_path / "log"
    log.write_text("")
    return gpu_check, gpu_check.Check(report, tmp_path, log, time.time() + budget, tmp_path,
                                      **fields)


def read_report(tmp_path: Path) -> tuple[dict, str]:
    out = tmp_path / "out"
    return json.loads((out / "gpu_check.json").read_text()), (out / "gpu_check.md").read_text()


def test_a_step_that_raises_keeps_the_report_of_the_steps_before_it(tmp_path):
    gpu_check, check = new_check(tmp_path)
    Step = gpu_check.Step
    assert check.step(Step("first", 10), lambda _: ("ok", "fine")) == "ok"
    code, output = check.command("echo", [sys.executable, "-c", "print('hi')"], 30)
    assert (code, output.strip()) == (0, "hi") and "== echo:" in check.log.read_text()

    def missing_command(timeout: float) -> tuple[str, str]:
        check.command("absent", ["/no/such/command"], timeout)
        return "ok", "never"

    assert check.step(Step("second", 10), missing_command) == "failed"
    assert check.step(Step("late", 1e6), lambda _: ("ok", "")) == "skipped"

    def interrupted(_: float) -> tuple[str, str]:
        raise KeyboardInterrupt  # the caller's time-out, or Ctrl-C

    with pytest.raises(KeyboardInterrupt):
        check.step(Step("third", 10), interrupted)
    report, text = read_report(tmp_path)
    assert [(s["name"], s["status"]) for s in report["steps"]] == [
        ("first", "ok"), ("second", "failed"), ("late", "skipped")]
    assert report["steps"][1]["detail"].startswith("FileNotFoundError")
    assert "time budget" in report["steps"][2]["detail"]
    assert "| first | 10 |" in text and "| second | 10 |" in text


FAKE_PROBES = '''
import argparse, json, os, time
parser = argparse.ArgumentParser()
for option in ("--records", "--work", "--budget-end", "--dry-run"):
    parser.add_argument(option)
parser.add_argument("steps", nargs="+")
args = parser.parse_args()
with open(args.records, "a") as records:
    for step in args.steps:
        name = step.rsplit("=", 1)[0]
        if name.startswith("hang"):
            time.sleep(60)
        if name.startswith("die"):
            os._exit(3)
        records.write(json.dumps({"row": {"table": "latency", "model": name}}) + "\\n")
        records.write(json.dumps({"end": name, "status": "ok", "detail": "done"}) + "\\n")
        records.flush()
'''


def test_a_probe_that_hangs_or_dies_costs_only_its_own_step(tmp_path):
    """The real runner and a child speaking the probe protocol: a hang is stopped at its
    limit, a crash fails its step, and the steps after each still run in a new child."""
    script = tmp_path / "fake_probes.py"
    script.write_text(FAKE_PROBES)
    gpu_check, check = new_check(tmp_path, probe_script=script)
    Step = gpu_check.Step
    check.probes((Step("a", 10), Step("hang", 2), Step("b", 10), Step("die", 10),
                  Step("c", 10)))
    report, _ = read_report(tmp_path)
    steps = [(s["name"], s["status"]) for s in report["steps"]]
    assert steps == [("a", "ok"), ("hang", "failed"), ("b", "ok"), ("die", "failed"),
                     ("c", "ok")]
    hang, die = report["steps"][1], report["steps"][3]
    assert "stopped at its limit" in hang["detail"] and 2 <= hang["seconds"] < 10
    assert "exit 3" in die["detail"]
    assert [r["model"] for r in report["results"]] == ["a", "b", "c"]


def test_a_dry_run_stops_a_step_at_three_times_its_limit(tmp_path):
    """A CPU of unknown speed stands in for the GPU: the dry run checks paths, not speed."""
    script = tmp_path / "fake_probes.py"
    script.write_text(FAKE_PROBES)
    gpu_check, check = new_check(tmp_path, dry_run="asked for", probe_script=script)
    check.probes((gpu_check.Step("hang", 1),))
    report, text = read_report(tmp_path)
    hang = report["steps"][0]
    assert hang["status"] == "failed" and 3 <= hang["seconds"] < 10 and hang["limit_s"] == 1
    assert "stopped at 3 times it in this dry run" in text


def test_a_probe_child_that_cannot_start_fails_its_steps_once(tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("raise SystemExit(5)\n")
    gpu_check, check = new_check(tmp_path, probe_script=script)
    check.probes((gpu_check.Step("a", 10), gpu_check.Step("b", 10)))
    report, _ = read_report(tmp_path)
    assert [(s["name"], s["status"]) for s in report["steps"]] == [("a", "failed"),
                                                                    ("b", "failed")]
    assert "exit 5" in report["steps"][0]["detail"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ("import pytest\n\ndef test_a():\n    pytest.skip('no CUDA here')\n", "skipped",
     "no GPU test ran: 1 skipped (skipped: no CUDA here)"),
    ("def test_a():\n    pass\n\ndef test_b():\n    assert False\n", "failed", "1 failed"),
    ("import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    pytest.skip('later')\n",
     "ok", "1 passed, 1 skipped"),
])
def test_a_gpu_test_run_is_ok_only_when_a_test_ran(tmp_path, body, status, words):
    gpu_check = gpu_check_module()
    (tmp_path / "test_case.py").write_text(body)
    junit = tmp_path / "junit.xml"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--junitxml={junit}", str(tmp_path / "test_case.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)
    found, detail = gpu_check.judge_junit(junit, done.returncode)
    assert found == status and words in detail, detail
    assert gpu_check.judge_junit(tmp_path / "absent.xml", 4)[0] == "failed"


def test_checkout_runs_without_an_install(tmp_path):
    """With the editable install's finder removed, the mapped packages load from the checkout
    only through scripts/checkout.py."""
    code = ("import sys\n"
            "sys.meta_path[:] = [f for f in sys.meta_path\n"
            "                    if not f.__module__.startswith('__editable__')]\n"
            "try:\n    import cflnet_sdk.runtime\nexcept ImportError:\n    print('absent')\n"
            "for name in [m for m in sys.modules if m.startswith('cflnet_sdk')]:\n"
            "    del sys.modules[name]\n"
            f"sys.path.insert(0, {str(SCRIPTS)!r})\n"
            "import checkout\ncheckout.install()\nimport cflnet_sdk.runtime\n"
            "print(cflnet_sdk.runtime.__file__)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["absent", str(ROOT / "runtime" / "__init__.py")]
    usage = subprocess.run([sys.executable, str(SCRIPTS / "checkout.py"), "nothing"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert usage.returncode == 1 and "cflnet-export" in usage.stderr


def test_fp16_export_needs_no_onnxslim(tiny_model, monkeypatch):
    onnx = pytest.importorskip("onnx")
    from cflnet_sdk.export.onnx import build_onnx
    from cflnet_sdk.export.precision import make_variant
    from cflnet_sdk.metadata import PRECISION_KEY

    monkeypatch.setitem(sys.modules, "onnxslim", None)  # as where it is not installed
    half = make_variant(build_onnx(tiny_model, size=64, simplify=False), "fp16")
    onnx.checker.check_model(half)
    assert {p.key: p.value for p in half.metadata_props}[PRECISION_KEY] == "fp16"
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in half.graph.initializer)
