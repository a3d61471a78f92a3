"""Exact-resume state of a run, without pickle: tensors in safetensors, everything else JSON.

``state.safetensors`` holds the model weights (``model.*``), the optimizer, scheduler and
grad-scaler tensors and the torch RNG states; its metadata holds the same JSON as
``state.json`` (the scalars, the Python/numpy RNG states, the data-order position). Because the
JSON travels inside the tensor file, one atomic write commits a consistent state: a run killed
at any moment resumes from the last complete file. ``state.json`` is a readable copy.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cflnet_sdk.errors import ModelFileError
from cflnet_sdk.fileio import atomic_path, write_bytes_atomic

STATE_TENSORS = "state.safetensors"
STATE_JSON = "state.json"
STATE_KEY = "cflnet.train_state"
STATE_FORMAT = "train-state/1"


def encode(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``value`` as JSON, its tensors and arrays moved into ``tensors`` under ``name``-keys.

    Tuples, non-string dict keys (the optimizer's parameter ids) and numpy arrays are tagged so
    ``decode`` gives back the same Python structure.
    """
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        tensors[name] = torch.from_numpy(value.astype(np.int64) if value.dtype == np.uint32
                                         else np.ascontiguousarray(value))
        return {"__ndarray__": name, "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, f"{name}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: encode(v, f"{name}.{k}", tensors) for k, v in value.items()}
        return {"__items__": [[encode(k, f"{name}.k{i}", tensors), encode(v, f"{name}.{k}",
                                                                          tensors)]
                              for i, (k, v) in enumerate(value.items())]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {name} in a training state")


def decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of ``encode``."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy().astype(value["dtype"])
    if "__tuple__" in value:
        return tuple(decode(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {_hashable(decode(k, tensors)): decode(v, tensors) for k, v in value["__items__"]}
    return {k: decode(v, tensors) for k, v in value.items()}


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and (if used) CUDA generator states of this process."""
    state: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(run_dir: str | Path, model_state: dict[str, torch.Tensor],
               payload: dict[str, Any]) -> Path:
    """Write ``state.safetensors`` (atomic, self-contained) and then ``state.json``."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    document = json.dumps({"format": STATE_FORMAT, **encode(payload, "state", tensors)})
    path = Path(run_dir) / STATE_TENSORS
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={STATE_KEY: document})
    readable = json.dumps(json.loads(document), indent=1) + "\n"
    write_bytes_atomic(Path(run_dir) / STATE_JSON, readable.encode("utf-8"))
    return path


def has_state(run_dir: str | Path) -> bool:
    return (Path(run_dir) / STATE_TENSORS).is_file()


def load_state(run_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(model_state_dict, payload)`` of the last complete save of a run."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(run_dir) / STATE_TENSORS
    if not path.is_file():
        raise ModelFileError(f"no {STATE_TENSORS} here: not a run directory, or the run never "
                             "reached its first save; start it again without --resume", run_dir)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        document = json.loads(metadata[STATE_KEY])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise ModelFileError(f"unreadable training state ({exc}); the run cannot resume "
                             "exactly, start a new run (last.safetensors still holds the "
                             "weights)", path) from exc
    if document.pop("format", None) != STATE_FORMAT:
        raise ModelFileError(f"training state of another format (expected {STATE_FORMAT}); "
                             "resume it with the cflnet-sdk version that wrote it", path)
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    return model_state, decode(document, tensors)
