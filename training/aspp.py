"""Atrous spatial pyramid pooling as in DeepLab v3+ (output-stride-16 rates), authors' layout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class ASPPBranch(nn.Module):
    """Bias-free (dilated) convolution, batch norm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int):
        super().__init__()
        padding = 0 if kernel_size == 1 else dilation
        self.atrous_conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding,
                                     dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.atrous_conv(x)))


class ASPP(nn.Module):
    """Four atrous branches plus image pooling, concatenated and projected to ``channels``."""

    def __init__(self, in_channels: int, channels: int = 512,
                 rates: Sequence[int] = (1, 6, 12, 18), dropout: float = 0.5):
        super().__init__()
        self.aspp1 = ASPPBranch(in_channels, channels, 1, rates[0])
        self.aspp2 = ASPPBranch(in_channels, channels, 3, rates[1])
        self.aspp3 = ASPPBranch(in_channels, channels, 3, rates[2])
        self.aspp4 = ASPPBranch(in_channels, channels, 3, rates[3])
        self.global_avg_pool = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        )
        self.conv1 = nn.Conv2d(channels * 5, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.global_avg_pool(x)
        # The authors upsample the 1x1 pooled map bilinearly (align_corners=True): that is
        # exactly a broadcast, which exports to a simpler graph.
        pooled = pooled.expand(-1, -1, x.shape[2], x.shape[3])
        branches = [self.aspp1(x), self.aspp2(x), self.aspp3(x), self.aspp4(x), pooled]
        x = self.relu(self.bn1(self.conv1(torch.cat(branches, dim=1))))
        return self.dropout(x)
