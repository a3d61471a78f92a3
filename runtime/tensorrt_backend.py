"""TensorRT backend: cflnet engine files (or raw plans) on NVIDIA GPUs and Jetson. No torch.

Uses the TensorRT 10/11 named-tensor API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) and cuda-python's runtime bindings for the stream and device buffers;
both are imported when an engine is opened, so this module loads anywhere.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.engine_file import check_engine_header, engine_contract, read_engine
from cflnet_sdk.errors import (
    BackendUnavailableError,
    EngineCompatibilityError,
    ModelFileError,
)
from cflnet_sdk.metadata import OUTPUT_NAME
from cflnet_sdk.runtime.base import BackendInfo, parse_device, register

INSTALL_HINT = ("pip install 'cflnet-sdk[tensorrt]' on a machine with an NVIDIA GPU "
                "(on Jetson, TensorRT comes with JetPack)")


def import_cudart() -> Any:
    """cuda-python's runtime module: ``cuda.bindings.runtime`` (12.6+) or ``cuda.cudart``."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except ImportError as exc:
            raise BackendUnavailableError(f"the tensorrt backend needs cuda-python ({exc}); "
                                          + INSTALL_HINT) from exc
    return cudart


class Cuda:
    """The handful of CUDA runtime calls the backend needs, each checked."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def call(self, result: Any, what: str) -> Any:
        error, *values = result if isinstance(result, tuple) else (result,)
        if error != self.rt.cudaError_t.cudaSuccess:
            _, name = self.rt.cudaGetErrorName(error)
            raise BackendUnavailableError(f"CUDA {what} failed: {name.decode()}; check the "
                                          "NVIDIA driver and the device index")
        return values[0] if len(values) == 1 else tuple(values)

    def set_device(self, index: int) -> None:
        count = self.call(self.rt.cudaGetDeviceCount(), "device query")
        if index >= count:
            raise BackendUnavailableError(f"device cuda:{index} asked for, but {count} CUDA "
                                          "device(s) exist")
        self.call(self.rt.cudaSetDevice(index), f"cudaSetDevice({index})")

    def malloc(self, nbytes: int) -> int:
        return int(self.call(self.rt.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes})"))

    def free(self, pointer: int) -> None:
        self.rt.cudaFree(pointer)

    def stream(self) -> Any:
        return self.call(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    def copy(self, destination: int, source: int, nbytes: int, to_device: bool,
             stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind
        direction = kind.cudaMemcpyHostToDevice if to_device else kind.cudaMemcpyDeviceToHost
        self.call(self.rt.cudaMemcpyAsync(destination, source, nbytes, direction, stream),
                  "cudaMemcpyAsync")

    def synchronize(self, stream: Any) -> None:
        self.call(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def identity(self, index: int) -> tuple[str, str]:
        """(name, compute capability "8.7") of device ``index``, for the engine check."""
        props = self.call(self.rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return name.rstrip("\x00"), f"{props.major}.{props.minor}"

    def memory_used(self) -> int:
        free, total = self.call(self.rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(total) - int(free)


class DeviceBuffer:
    """Device memory that grows on demand, so varying batch sizes do not reallocate each run."""

    def __init__(self, cuda: Cuda) -> None:
        self.cuda, self.pointer, self.nbytes = cuda, 0, 0

    def reserve(self, nbytes: int) -> int:
        if nbytes > self.nbytes:
            self.release()
            self.pointer, self.nbytes = self.cuda.malloc(nbytes), nbytes
        return self.pointer

    def release(self) -> None:
        if self.pointer:
            self.cuda.free(self.pointer)
        self.pointer, self.nbytes = 0, 0


class TensorRTBackend:
    """One engine, one execution context and one CUDA stream.

    An execution context holds per-call state, so calls are serialised by the Localizer
    (``thread_safe = False``).
    """

    name = "tensorrt"
    thread_safe = False

    def __init__(self, engine: Any, runtime: Any, cuda: Cuda, device_index: int,
                 contract: Contract, source: Path, precision: str = "unknown") -> None:
        import tensorrt as trt

        self.engine, self.cuda, self.contract, self.source = engine, cuda, contract, source
        self.precision = precision  # from the cflnet header; a raw plan does not say
        self.runtime = runtime  # the engine must not outlive its runtime
        self._device_index = device_index
        self.device = f"cuda:{device_index}"
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise ModelFileError(f"engine has inputs {inputs} and outputs {outputs}; a CFL-Net "
                                 "engine has one image input and a probability output", source)
        self.input_name = inputs[0]
        self.output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else outputs[0]
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.profile = [tuple(shape) for shape in
                        engine.get_tensor_profile_shape(self.input_name, 0)]  # min, opt, max
        self.max_batch: int | None = int(self.profile[2][0])
        self.check_shape((1, contract.channels, *contract.size))
        self.context = engine.create_execution_context()
        if self.context is None:
            raise EngineCompatibilityError("TensorRT could not create an execution context "
                                           "(out of GPU memory?); free the GPU or use a "
                                           "smaller engine", source)
        self.stream = cuda.stream()
        self._buffers = {self.input_name: DeviceBuffer(cuda),
                         self.output_name: DeviceBuffer(cuda)}
        for name in outputs[1:]:  # extra outputs still need an address
            self._buffers.setdefault(name, DeviceBuffer(cuda))

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Refuse shapes outside the engine's optimisation profile before TensorRT does."""
        low, _, high = self.profile
        if len(shape) != len(low) or any(not lo <= s <= hi for s, lo, hi in
                                         zip(shape, low, high, strict=True)):
            raise EngineCompatibilityError(
                f"input shape {tuple(shape)} is outside the engine's optimisation profile "
                f"(min {low}, max {high}); rebuild the engine with `cflnet-export engine` for "
                "this size and batch, or run a matching contract", self.source)

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.check_shape(batch.shape)
        host_input = np.ascontiguousarray(batch, dtype=self._dtypes[self.input_name])
        self.cuda.call(self.cuda.rt.cudaSetDevice(self._device_index), "cudaSetDevice")
        if not self.context.set_input_shape(self.input_name, tuple(host_input.shape)):
            raise EngineCompatibilityError(f"TensorRT refused input shape {host_input.shape}",
                                           self.source)
        results: dict[str, np.ndarray] = {}
        for name, buffer in self._buffers.items():
            if name == self.input_name:
                pointer = buffer.reserve(host_input.nbytes)
                self.cuda.copy(pointer, host_input.ctypes.data, host_input.nbytes, True,
                               self.stream)
            else:
                shape = tuple(self.context.get_tensor_shape(name))
                results[name] = np.empty(shape, dtype=self._dtypes[name])
                pointer = buffer.reserve(results[name].nbytes)
            self.context.set_tensor_address(name, pointer)
        if not self.context.execute_async_v3(int(self.stream)):
            raise EngineCompatibilityError("TensorRT execution failed (see the TensorRT log "
                                           "above); rebuild the engine on this machine",
                                           self.source)
        output = results[self.output_name]
        self.cuda.copy(output.ctypes.data, self._buffers[self.output_name].pointer,
                       output.nbytes, False, self.stream)
        self.cuda.synchronize(self.stream)
        probability = output.astype(np.float32, copy=False)
        return probability[:, 0] if probability.ndim == 4 else probability

    def close(self) -> None:
        for buffer in self._buffers.values():
            buffer.release()
        if getattr(self, "stream", None) is not None:
            self.cuda.rt.cudaStreamDestroy(self.stream)
            self.stream = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at shutdown CUDA may already be gone
            self.close()


def open_tensorrt(path: Path, *, device: str = "auto", contract: Contract | None = None
                  ) -> TensorRTBackend:
    """Read the engine file, check its header, deserialise it on the chosen GPU."""
    kind, index = parse_device(device)
    if kind == "cpu":
        raise BackendUnavailableError("TensorRT runs on NVIDIA GPUs only; use an .onnx model "
                                      "with backend='onnxruntime' for the CPU", path)
    header, plan = read_engine(path)
    use_contract = contract or engine_contract(header, path)
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(f"tensorrt is not installed ({exc}); " + INSTALL_HINT,
                                      path) from exc
    cuda = Cuda(import_cudart())
    cuda.set_device(index)
    if header is not None:
        check_engine_header(header, trt.__version__, cuda.identity(index), path)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    if header is not None and header.get("version_compatible"):
        runtime.engine_host_code_allowed = True  # the plan embeds its lean runtime (host code)
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        built = {k: v for k, v in (header or {}).items() if k != "contract"}
        raise EngineCompatibilityError(
            f"TensorRT {trt.__version__} could not deserialise this engine (built with "
            f"{built or 'unknown settings'}); engines are tied to the TensorRT release and GPU "
            "that built them: rebuild it here with `cflnet-export engine`", path)
    return TensorRTBackend(engine, runtime, cuda, index, use_contract, path,
                           (header or {}).get("precision", "unknown"))


register(BackendInfo(name="tensorrt", suffixes=(".engine", ".plan", ".trt"), open=open_tensorrt,
                     install_hint=INSTALL_HINT))
