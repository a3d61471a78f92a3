"""``cflnet benchmark`` times every model file it is given, each as a row of its own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cflnet_sdk import Localizer
from cflnet_sdk.cli import app
from cflnet_sdk.errors import ModelFileError
from cflnet_sdk.runtime.benchmark import plan_runs

pytest.importorskip("onnxruntime", reason="the rows are timed with onnxruntime")


@pytest.fixture(scope="module")
def fp32_and_fp16(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny network as an fp32 ONNX file and its fp16 variant: one backend, two files."""
    import onnx

    from cflnet_sdk.export.onnx import build_onnx, save_onnx
    from cflnet_sdk.export.precision import make_variant

    folder = tmp_path_factory.mktemp("bench-files")
    fp32 = build_onnx(tiny_model, size=64)
    copy = onnx.ModelProto()
    copy.CopyFrom(fp32)
    return (save_onnx(fp32, folder / "tiny.onnx"),
            save_onnx(make_variant(copy, "fp16"), folder / "tiny-fp16.onnx"))


def test_two_onnx_files_on_one_backend_are_both_timed(fp32_and_fp16, tmp_path):
    report = tmp_path / "bench.json"
    args = ["benchmark", "--batch-sizes", "1", "--size", "64", "--warmup", "0",
            "--iterations", "2", "--json", str(report)]
    for path in fp32_and_fp16:
        args += ["--model", str(path)]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    rows = json.loads(report.read_text())
    assert [(Path(r["model"]).name, r["precision"], r["backend"]) for r in rows] == [
        ("tiny.onnx", "fp32", "onnxruntime"), ("tiny-fp16.onnx", "fp16", "onnxruntime")]
    timed = [line for line in out.output.splitlines() if line.startswith("onnxruntime ")]
    assert len(timed) == 2
    assert timed[0].split()[1] == "fp32" and timed[0].endswith("tiny.onnx")
    assert timed[1].split()[1] == "fp16" and timed[1].endswith("tiny-fp16.onnx")


def test_the_same_file_twice_gives_two_rows(fp32_and_fp16, tmp_path):
    fp32, _ = fp32_and_fp16
    report = tmp_path / "twice.json"
    out = CliRunner().invoke(app, ["benchmark", "-m", str(fp32), "-m", str(fp32),
                                   "--batch-sizes", "1", "--size", "64", "--warmup", "0",
                                   "--iterations", "1", "--json", str(report)])
    assert out.exit_code == 0, out.output
    assert [Path(r["model"]).name for r in json.loads(report.read_text())] == ["tiny.onnx"] * 2


def test_a_file_that_cannot_run_is_an_error_naming_it(fp32_and_fp16, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    out = CliRunner().invoke(app, ["benchmark", "-m", str(fp32_and_fp16[0]), "-m", str(broken),
                                   "--batch-sizes", "1", "--size", "64", "--iterations", "1"])
    assert isinstance(out.exception, ModelFileError)
    assert str(broken) in str(out.exception)


def test_a_file_no_listed_backend_runs_is_an_error_naming_it(fp32_and_fp16, tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    with pytest.raises(ModelFileError, match=r"model\.safetensors.*add --backend torch"):
        plan_runs([fp32_and_fp16[0], checkpoint], ["onnxruntime"], 64, tmp_path)
    with pytest.raises(ModelFileError, match="no model file for the torch backend"):
        plan_runs([fp32_and_fp16[0]], ["onnxruntime", "torch"], 64, tmp_path)
    assert plan_runs(list(fp32_and_fp16), None, 64, tmp_path) == [
        (fp32_and_fp16[0], "onnxruntime"), (fp32_and_fp16[1], "onnxruntime")]


def test_profile_times_every_stage_of_predict_on_a_photo(tile_onnx, photo_files, tmp_path):
    from cflnet_sdk.tiling import tile_count
    from cflnet_sdk.training.calibrate import with_decision

    model = tmp_path / "fused.onnx"  # a verdict with copy-move evidence, as the default's
    with_decision(tile_onnx, 0.9, 0.05, model, copy_move_threshold=0.5)
    report = tmp_path / "profile.json"
    out = CliRunner().invoke(app, ["benchmark", "--model", str(model), "--profile",
                                   str(photo_files["jpeg"]), "--warmup", "0", "--iterations",
                                   "1", "--json", str(report)])
    assert out.exit_code == 0, out.output
    stages = ["decode", "input channels", "tiles", "network", "blend", "map and score",
              "copy-move", "fusion"]
    assert all(stage in out.output for stage in stages), out.output
    assert "copy-move on" in out.output and "predict (measured)" in out.output
    (row,) = json.loads(report.read_text())
    assert list(row["stages_ms"]) == stages and min(row["stages_ms"].values()) > 0
    assert row["predict_ms"] > 0 and row["peak_rss_mb"] > 0
    assert row["units"] == tile_count(row["height"], row["width"], Localizer(model).contract)


@pytest.mark.parametrize("flags", [{"amx_bf16", "avx512f"}, {"avx512f"}])
def test_profile_says_when_openvino_would_run_this_cpu_faster(fp32_and_fp16, photo_files,
                                                               monkeypatch, flags):
    """On ONNX Runtime's own kernels, a CPU with native bfloat16 gets the hint; others not."""
    from cflnet_sdk.runtime import onnxruntime_backend

    monkeypatch.setattr(onnxruntime_backend, "cpu_flags", lambda: frozenset(flags))
    out = CliRunner().invoke(app, ["benchmark", "--model", str(fp32_and_fp16[0]), "--profile",
                                   str(photo_files["jpeg"]), "--warmup", "0", "--iterations",
                                   "1", "--device", "cpu"])
    assert out.exit_code == 0, out.output
    import onnxruntime

    on_own_kernels = onnxruntime_backend.OPENVINO_EP not in onnxruntime.get_available_providers()
    assert ("cflnet-sdk[openvino]" in out.output) == ("amx_bf16" in flags and on_own_kernels)


def test_profile_of_a_missing_photo_is_an_error_naming_it(fp32_and_fp16, tmp_path):
    out = CliRunner().invoke(app, ["benchmark", "--model", str(fp32_and_fp16[0]), "--profile",
                                   str(tmp_path / "nope.jpg")])
    assert out.exit_code == 2 and "nope.jpg" in out.output
