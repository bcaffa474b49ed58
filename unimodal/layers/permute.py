"""Layout permutes between ``(B, C, H, W)`` and channels-last ``(B, H, W, C)`` (modules, for ``nn.Sequential``)."""
import torch
from torch import nn

__all__ = ['NCHWtoNHWC', 'NHWCtoNCHW']


class NCHWtoNHWC(nn.Module):
    """Permute ``(B, C, H, W)`` to channels-last ``(B, H, W, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class NHWCtoNCHW(nn.Module):
    """Permute channels-last ``(B, H, W, C)`` to ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)
