"""What a served cflnet model does with a request: encoded image bytes in, the Localizer's answer
out. ``cflnet serve``, an exported Python-backend model and the steps of an exported ensemble all
call these functions, so every way of serving gives the answer ``Localizer.predict`` gives.

Tensors (per request): ``image_bytes`` BYTES [1], the file as the client has it (JPEG, PNG ...);
``probability`` FP32 [H, W] at the image's own size, or ``mask_png`` BYTES [1] (a PNG of
``Prediction.mask``: empty when the score is below the contract's decision threshold) when the
model is served with output "mask"; ``score`` FP32 [1], the image score; ``size`` INT32 [2], the
image's height and width. Inside an ensemble whose contract fuses copy-move evidence, a
``copy_move`` step turns the same bytes into ``copy_move`` FP32 [H, W] and ``copy_move_score``
FP32 [1] while the model runs, and the last step fuses them as ``Localizer`` does.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
from PIL import Image

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import CFLNetError, ConfigError, ImageError
from cflnet_sdk.fusion import fused_prediction
from cflnet_sdk.images import load_image
from cflnet_sdk.localizer import Localizer, ResizedImage, ResizedOutput
from cflnet_sdk.prediction import Prediction
from cflnet_sdk.runtime.copymove import CopyMoveDetector, CopyMoveEvidence
from cflnet_sdk.tiling import TileCanvas, TiledImage

INPUT = "image_bytes"
PROBABILITY, MASK_PNG, SCORE, SIZE = "probability", "mask_png", "score", "size"
# Inside an ensemble: what the pre step hands the model, and the model's output the post step
# reads (``size`` travels from pre to post).
MODEL_INPUT, MODEL_OUTPUT = "image", "model_output"
COPY_MOVE, COPY_MOVE_SCORE = "copy_move", "copy_move_score"
Output = Literal["probability", "mask"]
OUTPUTS: tuple[Output, ...] = ("probability", "mask")
# 40 MP: a 12k x 3.3k panorama or a 7.7k x 5.2k photo. The map alone is 4 bytes a pixel, and a
# server answers many clients, so larger images are refused before their pixels are decoded.
MAX_PIXELS = 40_000_000

Answer = dict[str, np.ndarray]


def check_output(output: str) -> Output:
    if output not in OUTPUTS:
        raise ConfigError(f"output {output!r} is not one of {', '.join(OUTPUTS)}")
    return output  # type: ignore[return-value]


def output_names(output: Output) -> list[str]:
    """The output tensors of a model served with ``output``, in config order."""
    return [PROBABILITY if output == "probability" else MASK_PNG, SCORE, SIZE]


def payload_bytes(tensor: np.ndarray) -> bytes:
    """The one BYTES element of a request's ``image_bytes`` tensor (any leading batch dims)."""
    if tensor.size != 1:
        raise ImageError(f"{INPUT} holds {tensor.size} elements; send one encoded image per "
                         "request (shape [1], or [1, 1] with a batch dimension)")
    value = tensor.reshape(-1)[0]
    return value if isinstance(value, bytes) else bytes(value)


def check_size(payload: bytes, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image over ``max_pixels`` from its header, before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(payload)) as header:
            width, height = header.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return  # not readable: load_image says what is wrong with it
    if width * height > max_pixels:
        raise ImageError(f"{width}x{height} is {width * height / 1e6:.1f} megapixels, over this "
                         f"server's limit of {max_pixels / 1e6:g}; downscale the image or start "
                         "the server with a larger --max-pixels")


def encode(prediction: Prediction, output: Output) -> Answer:
    """One request's output tensors (without a batch dimension)."""
    probability = prediction.probability
    first = {PROBABILITY: probability.astype(np.float32, copy=False)}
    if output == "mask":
        buffer = io.BytesIO()
        Image.fromarray(prediction.mask).save(buffer, format="PNG")
        first = {MASK_PNG: np.array([buffer.getvalue()], dtype=object)}
    return {**first, SCORE: np.array([prediction.score], dtype=np.float32),
            SIZE: np.array(probability.shape, dtype=np.int32)}


def answer(localizer: Localizer, payloads: list[bytes], output: Output,
           max_pixels: int = MAX_PIXELS) -> list[Answer | CFLNetError]:
    """Answers for a batch of requests, in order; a request that fails gets its own error and
    the others are still answered. Images decode in the Localizer's thread pool."""
    checked: list[bytes | CFLNetError] = []
    for payload in payloads:
        try:
            check_size(payload, max_pixels)
            checked.append(payload)
        except CFLNetError as exc:
            checked.append(exc)
    good = [item for item in checked if isinstance(item, bytes)]
    results = localizer.predict_iter(good, batch_size=max(1, len(good)), errors="return")
    answers: list[Answer | CFLNetError] = []
    for item in checked:
        result = item if isinstance(item, CFLNetError) else next(results)
        answers.append(result if isinstance(result, CFLNetError) else
                       encode(result, output))
    return answers


# -- the Python steps of an ensemble around an ONNX Runtime or TensorRT model -------------------
def prepare(payload: bytes, contract: Contract, max_tiles: int | None,
            max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray]:
    """Encoded image -> (model inputs [N, C, H, W], size INT32 [2]): one input in resize mode,
    the image's tiles in tile mode."""
    check_size(payload, max_pixels)
    rgb = load_image(payload)
    inputs = TiledImage(rgb, contract) if contract.mode == "tile" else \
        ResizedImage(rgb, contract)
    if max_tiles is not None and len(inputs) > max_tiles:
        raise ImageError(f"this {rgb.shape[1]}x{rgb.shape[0]} image takes {len(inputs)} tiles "
                         f"and the model accepts at most {max_tiles} per call; export a model "
                         "with a larger batch, or serve it with `--backend python`")
    batch = np.stack([inputs.input(index) for index in range(len(inputs))])
    return batch, np.array(rgb.shape[:2], dtype=np.int32)


def assemble(outputs: np.ndarray, size: np.ndarray, contract: Contract
             ) -> tuple[np.ndarray, float]:
    """Model outputs [N, (1,) H, W] of one image -> (probability at its size, image score),
    collected exactly as ``Localizer`` collects them."""
    maps = outputs.reshape(len(outputs), *contract.size)
    image_size = (int(size[0]), int(size[1]))
    collected = TileCanvas(image_size, contract) if contract.mode == "tile" else \
        ResizedOutput(image_size, contract)
    if len(maps) != len(collected):
        raise ImageError(f"{len(maps)} model outputs for an image that takes {len(collected)}")
    for index, probability in enumerate(maps):
        collected.add(index, probability)
    return collected.result()


def analyse_copy_move(payload: bytes, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray,
                                                                            np.ndarray]:
    """Encoded image -> (copy-move map FP32 [H, W], copy-move score FP32 [1])."""
    check_size(payload, max_pixels)
    found = CopyMoveDetector().analyse(load_image(payload))
    return found.probability, np.array([found.score], dtype=np.float32)


def verdict(outputs: np.ndarray, size: np.ndarray, contract: Contract,
            copy_move: tuple[np.ndarray, np.ndarray] | None = None) -> Prediction:
    """The Prediction ``Localizer.predict`` gives, from the model outputs of one image and, when
    the contract fuses it, the image's copy-move map and score."""
    probability, score = assemble(outputs, size, contract)
    prediction = Prediction(probability, score, contract.threshold,
                            decision_threshold=contract.decision)
    if copy_move is None or not contract.fuses_copy_move:
        return prediction
    found = CopyMoveEvidence(copy_move[0], float(copy_move[1].reshape(-1)[0]))
    return fused_prediction(prediction, found, contract.copy_move_threshold)
