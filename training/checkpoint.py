"""Checkpoints: one ``.safetensors`` file, its metadata holding the model config and contract.

safetensors cannot carry code, so loading a checkpoint never executes anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from cflnet_sdk import __version__
from cflnet_sdk.contract import Contract
from cflnet_sdk.errors import CFLNetError, ModelFileError
from cflnet_sdk.fileio import atomic_path
from cflnet_sdk.metadata import CONFIG_KEY, CONTRACT_KEY, FORMAT_KEY, VERSION_KEY
from cflnet_sdk.training.config import CFLNetConfig
from cflnet_sdk.training.model import CFLNet

CHECKPOINT_FORMAT = "checkpoint/1"


def checkpoint_metadata(config: CFLNetConfig, contract: Contract) -> dict[str, str]:
    return {FORMAT_KEY: CHECKPOINT_FORMAT, CONFIG_KEY: config.to_json(),
            CONTRACT_KEY: contract.to_json(), VERSION_KEY: __version__}


def save_checkpoint(model: nn.Module, path: str | Path, contract: Contract | None = None,
                    extra_tensors: dict[str, torch.Tensor] | None = None,
                    half: bool = False) -> Path:
    """Write ``model`` (a CFLNet, possibly DDP-wrapped) atomically; returns the path.

    ``contract`` defaults to the model's own (``model.contract``). ``extra_tensors`` lets a
    training run store state beside the weights under keys that cannot clash (``state.*``).
    ``half`` stores floating-point weights as float16 (half the file, for shipping); loading
    casts them back to the model's float32.
    """
    from safetensors.torch import save_file

    model = getattr(model, "module", model)
    contract = contract or getattr(model, "contract", None) or Contract()
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    tensors.update(extra_tensors or {})
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=checkpoint_metadata(model.config, contract))
    return path


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """Any failure to read ``path`` as safetensors becomes a ModelFileError that says why."""
    from safetensors import SafetensorError

    if not path.is_file():
        raise ModelFileError("no such checkpoint file", path)
    try:
        yield
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        hint = (" It looks like a PyTorch .pth: convert the authors' file with "
                "`cflnet import-official`." if path.suffix in (".pth", ".pt") else "")
        raise ModelFileError(f"not a readable safetensors file ({exc}); the file may be "
                             f"truncated or of another format.{hint}", path) from exc


def read_checkpoint_info(path: str | Path) -> tuple[CFLNetConfig, Contract]:
    """Config and contract of a checkpoint from its header alone: no weights are read."""
    from safetensors import safe_open

    path = Path(path)
    with _readable(path), safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get(FORMAT_KEY) != CHECKPOINT_FORMAT or CONFIG_KEY not in metadata:
        raise ModelFileError("a safetensors file, but not a cflnet-sdk checkpoint (no "
                             f"'{FORMAT_KEY}' metadata); save models with save_checkpoint or "
                             "`cflnet import-official`", path)
    try:
        config = CFLNetConfig.from_json(metadata[CONFIG_KEY])
        contract = Contract.from_json(metadata.get(CONTRACT_KEY, Contract().to_json()))
    except CFLNetError as exc:
        raise ModelFileError(str(exc), path) from exc
    return config, contract


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], CFLNetConfig, Contract]:
    """Tensors, config and contract of a checkpoint, with clear errors for any other file."""
    from safetensors.torch import load_file

    path = Path(path)
    config, contract = read_checkpoint_info(path)
    with _readable(path):
        tensors = load_file(str(path))
    return tensors, config, contract


def model_state(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The network's tensors of a checkpoint, without a training run's ``state.*`` entries."""
    return {k: v for k, v in tensors.items() if not k.startswith("state.")}


def load_weights(model: CFLNet, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """``load_state_dict(strict=True)`` with a message listing every mismatch, not a traceback."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{label} ({len(keys)}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if keys]
        raise ModelFileError("weights do not match the CFL-Net architecture "
                             f"({model.config.backbone}): " + "; ".join(parts), source)
    model.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> CFLNet:
    """Rebuild the model from a checkpoint, in eval mode, with ``model.contract`` set."""
    tensors, config, contract = read_checkpoint(path)
    model = CFLNet(config)
    load_weights(model, model_state(tensors), path)
    model.contract = contract
    return model.to(map_location).eval()


def average_checkpoints(paths: Sequence[str | Path],
                        weights: Sequence[float] | None = None) -> CFLNet:
    """The weighted average of checkpoints of one architecture and contract (equal weights by
    default): every floating-point tensor, normalisation statistics included. Operating points
    (``cflnet calibrate``) may differ and are dropped: calibrate the average anew.

    Averaging a fine-tuned model with the one it started from (WiSE-FT, Wortsman et al. 2022)
    keeps much of what fine-tuning forgot; averaging a run's epochs smooths its swings.
    """
    if not paths:
        raise ModelFileError("no checkpoints to average")
    weights = list(weights) if weights is not None else [1.0] * len(paths)
    if len(weights) != len(paths) or min(weights) < 0 or sum(weights) <= 0:
        raise ModelFileError(f"weights {weights} must be one non-negative number per "
                             f"checkpoint ({len(paths)}), not all zero", paths[0])
    models = [load_checkpoint(path) for path in paths]
    first = models[0]
    first.contract = first.contract.uncalibrated()
    for path, model in zip(paths[1:], models[1:], strict=True):
        if model.config != first.config or model.contract.uncalibrated() != first.contract:
            raise ModelFileError(f"architecture or contract differs from {paths[0]}: only "
                                 "checkpoints of one run or of its fine-tunes average", path)
    shares = [weight / sum(weights) for weight in weights]
    states = [model.state_dict() for model in models]
    averaged = {}
    for key, value in states[0].items():  # integer buffers (batch counts) are the first's
        if value.is_floating_point():
            mixed = sum(share * state[key].double() for share, state in zip(shares, states,
                                                                            strict=True))
            value = mixed.to(value.dtype)
        averaged[key] = value
    first.load_state_dict(averaged)
    return first
