"""DistributedDataParallel plumbing: process group from ``torchrun``'s environment, rank helpers.

Without ``torchrun`` (no ``WORLD_SIZE`` > 1) every helper degrades to the single-process case, so
the training loop has one code path. Backend: nccl on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cflnet_sdk.errors import BackendUnavailableError


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    """Rank and world size as set by ``torchrun`` (all 0/1 when run directly)."""
    return DistInfo(rank=int(os.environ.get("RANK", 0)),
                    local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                    world_size=int(os.environ.get("WORLD_SIZE", 1)))


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """``auto`` -> this rank's GPU when CUDA is there, else the CPU; refuses absent CUDA."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BackendUnavailableError(f"--device {device} asked for, but torch sees no CUDA "
                                          "GPU; use --device cpu")
        index = info.local_rank if device == "cuda" else int(device.split(":")[1])
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if device != "cpu":
        raise BackendUnavailableError(f"--device {device!r}: use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def setup(device: torch.device, info: DistInfo) -> None:
    """Join the process group (only under torchrun with more than one process)."""
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30),
                                device_id=device if device.type == "cuda" else None)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64 on the wire)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is true on any: ranks must agree to stop at the same step."""
    return all_sum([float(flag)], device)[0] > 0


def gather(obj: Any) -> list[Any]:
    """Objects from all ranks, in rank order (each rank gets the list)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
