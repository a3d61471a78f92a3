"""PyTorch backend: runs a ``.safetensors`` checkpoint directly, for research and as reference.

torch and the model code are imported when a model is opened, never at module import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import BackendUnavailableError
from cflnet_sdk.runtime.base import BackendInfo, parse_device, register


class TorchBackend:
    """``CFLNetInference`` in eval mode under ``torch.inference_mode``.

    ``channels_last`` is off by default: for this FP32 network on the 2-core Xeon it was
    slower in two interleaved A/B runs (median 5.4 vs 5.1 s and 3.2 vs 2.6 s per image under
    load); it pays off with bf16 (DESIGN.md), which this backend does not use.

    Not marked thread-safe: a forward pass already uses every core, so parallel calls would
    only fight over them; the Localizer serialises calls instead.
    """

    name = "torch"
    precision = "fp32"  # weights stored as float16 are cast back: the network computes in fp32
    max_batch: int | None = None
    thread_safe = False

    def __init__(self, network: Any, device: str, contract: Contract,
                 channels_last: bool = False) -> None:
        import torch

        self._torch = torch
        self.network = network
        self.device = device
        self.contract = contract
        self._memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.network = self.network.to(memory_format=torch.channels_last)

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            x = x.to(self.device).contiguous(memory_format=self._memory_format)
            probability = self.network(x)[:, 0]
            return probability.float().cpu().numpy()


def torch_device(device: str) -> str:
    """Map the SDK's device names to a torch device, refusing CUDA that is not there."""
    import torch

    kind, index = parse_device(device)
    if kind == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if kind == "auto":
        return "cuda:0" if available else "cpu"
    if not available:
        raise BackendUnavailableError(f"device {device!r} asked for, but torch sees no CUDA GPU "
                                      "(CPU-only build or no driver); use device='cpu'")
    if index >= torch.cuda.device_count():
        raise BackendUnavailableError(f"device {device!r} asked for, but only "
                                      f"{torch.cuda.device_count()} CUDA device(s) exist")
    return f"cuda:{index}"


def open_torch(path: Path, *, device: str = "auto", contract: Contract | None = None
               ) -> TorchBackend:
    """Load a checkpoint into the inference network (projection head dropped)."""
    try:
        import torch  # noqa: F401

        from cflnet_sdk.training.checkpoint import load_checkpoint
        from cflnet_sdk.training.model import CFLNetInference
    except ImportError as exc:
        raise BackendUnavailableError(f"the torch backend needs PyTorch and timm ({exc}); "
                                      "install cflnet-sdk[train] or use an .onnx model",
                                      path) from exc
    target = torch_device(device)
    model = load_checkpoint(path, map_location=target)
    network = CFLNetInference(model).eval()
    contract = contract or model.contract
    contract.check_channels(3 + model.config.extra_channels, path)
    return TorchBackend(network, target, contract)


register(BackendInfo(name="torch", suffixes=(".safetensors",), open=open_torch,
                     install_hint="pip install 'cflnet-sdk[train]'"))
