"""Global Response Normalization (ConvNeXt V2) on channels-last maps."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ['GRN']


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2) on channels-last input.

    ``out = (gamma * Nx + 1) * x + beta`` with ``Nx = Gx / (mean_c(Gx) + 1e-6)``, ``Gx`` the spatial L2 norm.
    The deploy form has no ``beta`` (it is folded into the following Linear).

    Args:
        dim: channels.
        use_bias: keep ``beta``.
    """

    def __init__(self, dim: int, use_bias: bool = True):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim)) if use_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        out = (self.gamma * nx + 1) * x
        if self.beta is not None:
            out = out + self.beta
        return out
