"""Names shared by every model file format, so each stage reads what another wrote."""

from __future__ import annotations

from collections.abc import Mapping

CONTRACT_KEY = "cflnet.contract"  # Contract.to_json()
CONFIG_KEY = "cflnet.config"  # CFLNetConfig.to_json()
VERSION_KEY = "cflnet.sdk_version"  # the cflnet-sdk version that wrote the file
SOURCE_SHA256_KEY = "cflnet.source_sha256"  # sha256 of the checkpoint an export came from
PRECISION_KEY = "cflnet.precision"  # fp32 | fp16 | int8
INT8_TARGET_KEY = "cflnet.int8_target"  # tensorrt | cpu: the INT8 layout, in int8 files
WEIGHTS_KEY = "cflnet.weights"  # float32 | float16: how weights are stored (compute unchanged)
FORMAT_KEY = "cflnet.format"  # "checkpoint/1" in safetensors files

INPUT_NAME = "image"  # float32 (N, C, H, W), normalised by the contract (C = its channels)
OUTPUT_NAME = "probability"  # float32 (N, 1, H, W), tampered-class probability in [0, 1]


def precision_label(metadata: Mapping[str, str]) -> str:
    """What a file computes in, as reports name it: fp32, fp16, int8-cpu or int8-tensorrt.

    The two INT8 layouts are different files for different hardware, so the label keeps them
    apart; files without the key are fp32 (what the exporter writes by default).
    """
    precision = metadata.get(PRECISION_KEY, "fp32")
    target = metadata.get(INT8_TARGET_KEY)
    return f"{precision}-{target}" if precision == "int8" and target else precision
