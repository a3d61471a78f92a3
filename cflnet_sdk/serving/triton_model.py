"""The Python-backend model of a cflnet Triton repository (copied there as ``1/model.py``).

Its config's ``cflnet.role`` parameter says what it is: ``localizer`` (the whole pipeline: a
``Localizer`` on the model file beside this one), or the ``pre``, ``copy_move`` or ``post`` step
of an ensemble around an ONNX Runtime or TensorRT model. It imports the copy of ``cflnet_sdk``
that lies beside it, so a stock Triton needs only numpy, Pillow, OpenCV and the model's runtime
installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the repository's own cflnet_sdk wins over any installed one

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402  (exists inside Triton only)

from cflnet_sdk.contract import Contract  # noqa: E402
from cflnet_sdk.errors import CFLNetError  # noqa: E402
from cflnet_sdk.serving import pipeline  # noqa: E402


def _error(exc: Exception) -> Any:
    """A request's error: INVALID_ARG (HTTP 400) for what the client sent, INTERNAL otherwise."""
    code = pb_utils.TritonError.INVALID_ARG if isinstance(exc, CFLNetError) else \
        pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))


def _tensors(answer: dict[str, np.ndarray], batched: bool) -> list[Any]:
    return [pb_utils.Tensor(name, value[None] if batched else value)
            for name, value in answer.items()]


class TritonPythonModel:
    """Triton's entry point: ``initialize`` once per instance, ``execute`` per batch."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.params = {key: value["string_value"]
                       for key, value in config.get("parameters", {}).items()}
        self.role = self.params["cflnet.role"]
        self.batched = config.get("max_batch_size", 0) > 0
        self.max_pixels = int(self.params.get("cflnet.max_pixels", pipeline.MAX_PIXELS))
        self.output = pipeline.check_output(self.params.get("cflnet.output", "probability"))
        if self.role == "localizer":
            from cflnet_sdk.localizer import Localizer

            gpu = args.get("model_instance_kind") == "GPU"
            device = f"cuda:{args['model_instance_device_id']}" if gpu else "cpu"
            self.localizer = Localizer(HERE / self.params["cflnet.model_file"],
                                       backend=self.params.get("cflnet.backend", "auto"),
                                       device=device, mode=self.params.get("cflnet.mode") or None)
        else:
            self.contract = Contract.from_json(self.params["cflnet.contract"])
            self.max_tiles = int(self.params.get("cflnet.max_tiles", 0)) or None

    def execute(self, requests: list[Any]) -> list[Any]:
        try:
            if self.role == "localizer":
                return self._localize(requests)
            step = {"pre": self._prepare, "copy_move": self._copy_move,
                    "post": self._assemble}[self.role]
            return [self._guarded(step, request) for request in requests]
        except Exception as exc:  # a failing batch answers every request, never kills the model
            return [_error(exc) for _ in requests]

    def _localize(self, requests: list[Any]) -> list[Any]:
        payloads: list[bytes | CFLNetError] = []
        for request in requests:
            try:
                payloads.append(pipeline.payload_bytes(
                    pb_utils.get_input_tensor_by_name(request, pipeline.INPUT).as_numpy()))
            except CFLNetError as exc:
                payloads.append(exc)
        good = [p for p in payloads if isinstance(p, bytes)]
        answers = iter(pipeline.answer(self.localizer, good, self.output, self.max_pixels))
        responses = []
        for item in payloads:
            answer = item if isinstance(item, CFLNetError) else next(answers)
            responses.append(_error(answer) if isinstance(answer, CFLNetError) else
                             pb_utils.InferenceResponse(_tensors(answer, self.batched)))
        return responses

    def _guarded(self, step: Any, request: Any) -> Any:
        try:
            return pb_utils.InferenceResponse(step(request))
        except CFLNetError as exc:
            return _error(exc)

    def _prepare(self, request: Any) -> list[Any]:
        payload = pipeline.payload_bytes(
            pb_utils.get_input_tensor_by_name(request, pipeline.INPUT).as_numpy())
        inputs, size = pipeline.prepare(payload, self.contract, self.max_tiles, self.max_pixels)
        return [pb_utils.Tensor(pipeline.MODEL_INPUT, inputs), pb_utils.Tensor(pipeline.SIZE, size)]

    def _copy_move(self, request: Any) -> list[Any]:
        payload = pipeline.payload_bytes(
            pb_utils.get_input_tensor_by_name(request, pipeline.INPUT).as_numpy())
        probability, score = pipeline.analyse_copy_move(payload, self.max_pixels)
        return [pb_utils.Tensor(pipeline.COPY_MOVE, probability),
                pb_utils.Tensor(pipeline.COPY_MOVE_SCORE, score)]

    def _assemble(self, request: Any) -> list[Any]:
        def tensor(name: str) -> np.ndarray:
            return pb_utils.get_input_tensor_by_name(request, name).as_numpy()

        copy_move = (tensor(pipeline.COPY_MOVE), tensor(pipeline.COPY_MOVE_SCORE)) \
            if self.contract.fuses_copy_move else None
        verdict = pipeline.verdict(tensor(pipeline.MODEL_OUTPUT), tensor(pipeline.SIZE),
                                   self.contract, copy_move)
        return _tensors(pipeline.encode(verdict, self.output), False)

    def finalize(self) -> None:
        localizer = getattr(self, "localizer", None)
        if localizer is not None:
            localizer.close()
