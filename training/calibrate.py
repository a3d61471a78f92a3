"""The image-level operating point: the score above which a model calls a photo tampered.

A localizer is judged first on photos nobody edited. The verdict ``tampered`` is only worth
something at a stated price, so the decision threshold is chosen on unedited photos for a
share of false alarms (``operating_point``), and written into the model file's contract
(``with_decision``), from where every backend, ``cflnet predict`` and ``cflnet serve`` take it.
False alarms differ by how a photo was stored (never compressed, camera JPEG, web JPEG,
re-saved), and a pooled rate lets one kind hide another's, so the threshold holds every group
(each set, as it is and after each re-save) to the rate: the highest of their points
(``worst_group_point``). torch-free.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import CFLNetError, DataError, ModelFileError
from cflnet_sdk.fileio import write_bytes_atomic
from cflnet_sdk.metadata import CONTRACT_KEY

DECIMALS = 4  # the threshold is stored rounded up to this many decimals


def operating_point(scores: Sequence[float], false_alarm_rate: float) -> float:
    """The lowest threshold (rounded up to ``DECIMALS``) that calls at most ``false_alarm_rate``
    of ``scores`` (of unedited photos) tampered."""
    if not 0.0 <= false_alarm_rate < 1.0:
        raise DataError(f"false-alarm rate {false_alarm_rate} must be in [0, 1)")
    ranked = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if not len(ranked):
        raise DataError("no unedited photo was scored: give photos nobody edited")
    allowed = math.floor(false_alarm_rate * len(ranked) + 1e-9)
    above = ranked[allowed] if allowed < len(ranked) else 0.0  # must stay below the threshold
    step = 10.0 ** -DECIMALS
    return min(1.0, (math.floor(above / step + 1e-9) + 1) * step)


def worst_group_point(groups: dict[str, Sequence[float]], false_alarm_rate: float
                      ) -> tuple[float, str]:
    """The lowest threshold that calls at most ``false_alarm_rate`` of every group's scores
    tampered, and the group that set it."""
    points = {name: operating_point(scores, false_alarm_rate)
              for name, scores in groups.items() if len(scores)}
    if not points:
        raise DataError("no unedited photo was scored: give photos nobody edited")
    name = max(points, key=points.__getitem__)
    return points[name], name


def unedited_scores(model: str | Path, images: Iterable[Path | bytes], *,
                    copy_move: bool = False, backend: str = "auto", device: str = "auto",
                    batch_size: int = 8) -> tuple[list[float], list[float], list[str]]:
    """Per photo of ``images``: the network's score and, with ``copy_move``, the copy-move
    score (else an empty list); and the problems of the photos that could not be read."""
    from cflnet_sdk.localizer import Localizer

    network, copied, problems = [], [], []
    with Localizer(model, backend=backend, device=device, copy_move=copy_move) as localizer:
        for result in localizer.predict_iter(images, batch_size, errors="return"):
            if isinstance(result, CFLNetError):
                problems.append(str(result))
                continue
            network.append(result.score if result.network_score is None
                           else result.network_score)
            if result.copy_move is not None:
                copied.append(result.copy_move.score)
    return network, copied, problems


def verdict_scores(network: Sequence[float], copy_move: Sequence[float],
                   copy_move_threshold: float | None) -> list[float]:
    """What the verdict compares with the decision threshold: the network's score, or 2.0 for a
    photo whose copy-move score reaches ``copy_move_threshold`` (called tampered whatever the
    threshold, :mod:`cflnet_sdk.fusion`)."""
    if copy_move_threshold is None:
        return list(network)
    return [2.0 if copied >= copy_move_threshold else score
            for score, copied in zip(network, copy_move, strict=True)]


def with_decision(path: str | Path, decision_threshold: float, false_alarm_rate: float,
                  out: str | Path, copy_move_threshold: float | None = None) -> Contract:
    """Write ``path`` to ``out`` with the operating point in its contract (nothing else
    changes: weights byte for byte). ``copy_move_threshold``: the verdict also weighs
    copy-move evidence at that point (None: the network alone). ``.safetensors`` and
    ``.onnx`` files."""
    path, out = Path(path), Path(out)
    decision = {"decision_threshold": decision_threshold, "false_alarm_rate": false_alarm_rate,
                "copy_move_threshold": copy_move_threshold}
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _rewrite_safetensors(path, decision, out)
    if suffix == ".onnx":
        return _rewrite_onnx(path, decision, out)
    raise ModelFileError("only .safetensors checkpoints and .onnx files carry a contract that "
                         "can be rewritten; calibrate the ONNX file, then build the engine "
                         "from it", path)


def _decided(text: str | None, decision: dict[str, float | None], path: Path) -> Contract:
    if text is None:
        raise ModelFileError("this file carries no cflnet contract; export it with "
                             "cflnet-export or save it with cflnet train", path)
    return replace(Contract.from_json(text), **decision)


def _rewrite_safetensors(path: Path, decision: dict[str, float | None], out: Path) -> Contract:
    # The format is an 8-byte little-endian header length, a JSON header, then the tensor bytes
    # at offsets relative to the header's end: a new header leaves every tensor as it was.
    data = path.read_bytes()
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8:8 + length])
    except (struct.error, ValueError) as exc:
        raise ModelFileError(f"not a safetensors file ({exc})", path) from exc
    metadata = header.setdefault("__metadata__", {})
    contract = _decided(metadata.get(CONTRACT_KEY), decision, path)
    metadata[CONTRACT_KEY] = contract.to_json()
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # keep the tensor data 8-byte aligned
    write_bytes_atomic(out, struct.pack("<Q", len(encoded)) + encoded + data[8 + length:])
    return contract


def _rewrite_onnx(path: Path, decision: dict[str, float | None], out: Path) -> Contract:
    import onnx

    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, OSError, ValueError ...
        raise ModelFileError(f"not a readable ONNX file ({exc})", path) from exc
    entries = {p.key: p for p in proto.metadata_props}
    found = entries.get(CONTRACT_KEY)
    contract = _decided(None if found is None else found.value, decision, path)
    found.value = contract.to_json()  # type: ignore[union-attr]
    write_bytes_atomic(out, proto.SerializeToString())
    return contract
