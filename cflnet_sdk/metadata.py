"""Names shared by every model file format, so each stage reads what another wrote."""

CONTRACT_KEY = "cflnet.contract"  # Contract.to_json()
CONFIG_KEY = "cflnet.config"  # CFLNetConfig.to_json()
VERSION_KEY = "cflnet.sdk_version"  # the cflnet-sdk version that wrote the file
SOURCE_SHA256_KEY = "cflnet.source_sha256"  # sha256 of the checkpoint an export came from
PRECISION_KEY = "cflnet.precision"  # fp32 | fp16 | int8
WEIGHTS_KEY = "cflnet.weights"  # float32 | float16: how weights are stored (compute unchanged)
FORMAT_KEY = "cflnet.format"  # "checkpoint/1" in safetensors files

INPUT_NAME = "image"  # float32 (N, C, H, W), normalised by the contract (C = its channels)
OUTPUT_NAME = "probability"  # float32 (N, 1, H, W), tampered-class probability in [0, 1]
