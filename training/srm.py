"""The fixed SRM high-pass filter that feeds CFL-Net's noise stream."""

from __future__ import annotations

import torch
from torch import nn

_K1 = [[0, 0, 0, 0, 0],
       [0, 0, 0, 0, 0],
       [0, 1, -2, 1, 0],
       [0, 0, 0, 0, 0],
       [0, 0, 0, 0, 0]]
_K2 = [[0, 0, 0, 0, 0],
       [0, -1, 2, -1, 0],
       [0, 2, -4, 2, 0],
       [0, -1, 2, -1, 0],
       [0, 0, 0, 0, 0]]
_K3 = [[-1, 2, -2, 2, -1],
       [2, -6, 8, -6, 2],
       [-2, 8, -12, 8, -2],
       [2, -6, 8, -6, 2],
       [-1, 2, -2, 2, -1]]


def srm_kernels() -> torch.Tensor:
    """The three SRM kernels, each repeated over the 3 input channels: shape (3, 3, 5, 5)."""
    kernels = torch.tensor([_K1, _K2, _K3], dtype=torch.float32)
    kernels = kernels * torch.tensor([1 / 2, 1 / 4, 1 / 12]).view(3, 1, 1)
    return kernels[:, None].repeat(1, 3, 1, 1)


def srm_conv() -> nn.Conv2d:
    """Conv2d 3->3, 5x5, padding 2, no bias, weight frozen (``requires_grad=False``)."""
    conv = nn.Conv2d(3, 3, kernel_size=5, padding=2, bias=False)
    conv.weight = nn.Parameter(srm_kernels(), requires_grad=False)
    return conv
