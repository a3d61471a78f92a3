"""ONNX Runtime backend: the portable deployment path (CPU, CUDA EP, TensorRT EP, OpenVINO
EP). No torch.

onnxruntime-gpu lists GPU providers even where they cannot run and then silently falls back to
the CPU, so the providers really in use are read back from the session after it is created.
With onnxruntime-openvino (the ``openvino`` extra) the CPU runs the model through OpenVINO, in
bfloat16 where the CPU computes it natively (AMX, AVX-512 BF16): about four times ONNX Runtime's
own float32 kernels on a Xeon with AMX, maps within 0.01 of float32 (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import BackendUnavailableError, CFLNetError, ModelFileError
from cflnet_sdk.metadata import CONTRACT_KEY, INPUT_NAME, OUTPUT_NAME, precision_label
from cflnet_sdk.runtime.base import BackendInfo, cpu_count, cpu_flags, parse_device, register

TRT_EP = "TensorrtExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"
OPENVINO_EP = "OpenVINOExecutionProvider"
CPU_EP = "CPUExecutionProvider"
GPU_EPS = (TRT_EP, CUDA_EP)
# CPU instructions that compute bfloat16 natively (elsewhere OpenVINO would emulate it).
BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})

ProviderSpec = tuple[str, dict[str, Any]]


class OnnxRuntimeBackend:
    """One ``InferenceSession``; ORT sessions accept concurrent ``run`` calls."""

    name = "onnxruntime"
    thread_safe = True

    def __init__(self, session: Any, contract: Contract) -> None:
        self.session = session
        self.contract = contract
        self.providers: list[str] = list(session.get_providers())
        self.precision = _precision_of(session)
        self.device = _device_of(self.providers, session)
        inputs, outputs = session.get_inputs(), session.get_outputs()
        self._input = next((i for i in inputs if i.name == INPUT_NAME), inputs[0])
        self._output = next((o.name for o in outputs if o.name == OUTPUT_NAME), outputs[0].name)
        self._dtype = np.float16 if self._input.type == "tensor(float16)" else np.float32
        batch = self._input.shape[0] if self._input.shape else None
        self.max_batch: int | None = batch if isinstance(batch, int) and batch > 0 else None

    def run(self, batch: np.ndarray) -> np.ndarray:
        feed = {self._input.name: np.ascontiguousarray(batch, dtype=self._dtype)}
        (probability,) = self.session.run([self._output], feed)
        probability = np.asarray(probability, dtype=np.float32)
        return probability[:, 0] if probability.ndim == 4 else probability


def _precision_of(session: Any) -> str:
    """The file's precision, or bf16 when OpenVINO computes a float32 file in bfloat16."""
    label = precision_label(session.get_modelmeta().custom_metadata_map)
    in_bf16 = session.get_providers()[0] == OPENVINO_EP and "load_config" in openvino_options()
    return "bf16" if label == "fp32" and in_bf16 else label


def _computes_bf16() -> bool:
    return not BF16_FLAGS.isdisjoint(cpu_flags())


def openvino_options() -> dict[str, str]:
    """OpenVINO on the CPU, in bfloat16 where the CPU computes it natively."""
    options = {"device_type": "CPU"}
    if _computes_bf16():
        options["load_config"] = json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": "bf16"}})
    return options


def openvino_hint(providers: list[str]) -> str | None:
    """A line for a session on ONNX Runtime's own CPU kernels on a CPU that computes bfloat16
    natively, where the OpenVINO EP would run the network about four times faster."""
    if providers[:1] != [CPU_EP] or not _computes_bf16():
        return None
    return ("hint: this CPU computes bfloat16 natively; with onnxruntime-openvino (pip install "
            "\"cflnet-sdk[openvino]\" instead of [cpu]) the network runs about 4 times faster "
            "at the same accuracy (docs/runtime.md)")


def _device_of(providers: list[str], session: Any) -> str:
    if providers and providers[0] in GPU_EPS:
        options = session.get_provider_options().get(providers[0], {})
        return f"cuda:{options.get('device_id', 0)}"
    return "cpu"


def session_options(threads: int | None = None) -> Any:
    """Full graph optimisation, one intra-op thread per usable core, sequential execution.

    Idle intra-op threads sleep instead of spinning: the copy-move analysis, decoding and
    tiling run beside the network and need the cores it is not using (a 12 MP verdict on two
    cores: 7.1 s instead of 7.7 s, docs/benchmarks.md).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or cpu_count()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: provider fallbacks are reported by us
    return options


def provider_plan(device: str, available: list[str]) -> list[ProviderSpec]:
    """Providers to ask for, best first: TensorRT EP, CUDA EP, OpenVINO EP, CPU on "auto"."""
    kind, index = parse_device(device)
    cpu = [(OPENVINO_EP, openvino_options())] if OPENVINO_EP in available else []
    cpu.append((CPU_EP, {}))
    if kind == "cpu":
        return cpu
    if kind == "cuda":
        if CUDA_EP not in available:
            raise BackendUnavailableError(
                f"device {device!r} asked for, but this onnxruntime has no CUDA provider "
                f"(available: {', '.join(available)}); pip install onnxruntime-gpu "
                "(and uninstall onnxruntime), or use device='cpu'")
        return [(CUDA_EP, {"device_id": index}), (CPU_EP, {})]
    plan: list[ProviderSpec] = []
    if TRT_EP in available:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cflnet"
        plan.append((TRT_EP, {"device_id": 0, "trt_engine_cache_enable": True,
                              "trt_engine_cache_path": str(cache / "ort-trt")}))
    if CUDA_EP in available:
        plan.append((CUDA_EP, {"device_id": 0}))
    return [*plan, *cpu]


def create_session(path: Path, plan: list[ProviderSpec], threads: int | None = None) -> Any:
    """An ``InferenceSession``; on "auto" a GPU provider that fails to start is skipped."""
    import onnxruntime as ort

    if plan and plan[0][0] in GPU_EPS:
        Path(plan[0][1].get("trt_engine_cache_path", ".")).mkdir(parents=True, exist_ok=True)
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(threads),
                                    providers=[name for name, _ in plan],
                                    provider_options=[options for _, options in plan])
    except Exception as exc:  # ORT raises its own pybind types for every load problem
        if len(plan) > 1 and plan[0][0] in GPU_EPS:
            return create_session(path, plan[1:], threads)
        raise ModelFileError(f"ONNX Runtime cannot load this model ({type(exc).__name__}: "
                             f"{str(exc)[:300]}); re-export it with `cflnet-export onnx`",
                             path) from exc


def read_contract(session: Any, path: Path, override: Contract | None) -> Contract:
    """The contract from the ONNX metadata (or the caller's), checked against the graph input."""
    contract = override
    if contract is None:
        text = session.get_modelmeta().custom_metadata_map.get(CONTRACT_KEY)
        if text is None:
            raise ModelFileError(f"no '{CONTRACT_KEY}' metadata: not exported by cflnet-sdk; "
                                 "re-export with `cflnet-export onnx` or pass contract=", path)
        try:
            contract = Contract.from_json(text)
        except CFLNetError as exc:
            raise ModelFileError(str(exc), path) from exc
    shape = session.get_inputs()[0].shape
    fits = len(shape) == 4 and all(not isinstance(dim, int) or dim == want
                                   for dim, want in zip(shape[2:], contract.size, strict=True))
    if not fits:
        raise ModelFileError(f"graph input shape {shape} does not fit the contract size "
                             f"{contract.height}x{contract.width}; re-export the model", path)
    if isinstance(shape[1], int):
        contract.check_channels(shape[1], path)
    return contract


def open_onnxruntime(path: Path, *, device: str = "auto", contract: Contract | None = None,
                     threads: int | None = None) -> OnnxRuntimeBackend:
    """Open an ``.onnx`` file, verify the providers in use, and return the backend."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailableError("the onnxruntime backend needs ONNX Runtime; pip install "
                                      "'cflnet-sdk[cpu]' (or [gpu])", path) from exc
    available = list(ort.get_available_providers())
    session = create_session(path, provider_plan(device, available), threads)
    kind, _ = parse_device(device)
    in_use = list(session.get_providers())
    if kind == "cuda" and CUDA_EP not in in_use:
        raise BackendUnavailableError(
            f"device {device!r} asked for, but ONNX Runtime fell back to {', '.join(in_use)} "
            "(no working CUDA driver/GPU, or CUDA/cuDNN libraries missing); use device='cpu'",
            path)
    return OnnxRuntimeBackend(session, read_contract(session, path, contract))


register(BackendInfo(name="onnxruntime", suffixes=(".onnx",), open=open_onnxruntime,
                     install_hint="pip install 'cflnet-sdk[cpu]'  # or [gpu], [openvino]"))
