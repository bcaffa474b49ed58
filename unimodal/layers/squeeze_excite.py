"""Squeeze-and-Excitation in the layout of the UniRepLKNet release (``down`` / ``up`` 1x1 convs)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ['SEBlock']


class SEBlock(nn.Module):
    """Squeeze-and-Excitation: avg pool -> 1x1 conv (``down``) -> ReLU -> 1x1 conv (``up``) -> sigmoid -> scale.

    Args:
        channels: input/output channels.
        internal_channels: bottleneck channels.
    """

    def __init__(self, channels: int, internal_channels: int):
        super().__init__()
        self.down = nn.Conv2d(channels, internal_channels, kernel_size=1, bias=True)
        self.nonlinear = nn.ReLU(inplace=True)
        self.up = nn.Conv2d(internal_channels, channels, kernel_size=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.up(self.nonlinear(self.down(s))))
        return x * s
