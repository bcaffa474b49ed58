"""Image adapter: ``(B, 3, H, W)`` floats in [0, 1] → mean/std normalisation → trunk.

Images are what the trunk was designed for, so the adapter only normalises (ImageNet statistics by default,
as the released checkpoints expect) and optionally flips at train time.
"""
from __future__ import annotations

import logging
from typing import Any, List, Optional, Sequence, Tuple

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .base import Adapter, register_adapter

_logger = logging.getLogger(__name__)

__all__ = ['ImageAdapter']


@register_adapter('image')
class ImageAdapter(Adapter):
    """Normalise an image batch for the trunk.

    Args:
        in_chans: image channels (3 for RGB; 1 for grayscale data sets).
        mean: per-channel mean subtracted (default: ImageNet); its length must equal ``in_chans``.
        std: per-channel std divided by (default: ImageNet).
        hflip: probability of a horizontal flip of each training image (applied in :meth:`augment`).
    """

    name = 'image'
    head_kind = 'classification'
    input_desc = '(B, C, H, W) float image batch with values in [0, 1]'

    def __init__(self, in_chans: int = 3, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, hflip: float = 0.) -> None:
        super().__init__()
        in_chans = self.option('in_chans', in_chans, int, lo=1)
        hflip = self.option('hflip', hflip, float, lo=0, hi=1)
        mean = self.option('mean', mean, Optional[List[float]])
        std = self.option('std', std, Optional[List[float]])
        if mean is None:
            mean = IMAGENET_DEFAULT_MEAN if in_chans == 3 else (0.5,) * in_chans
        if std is None:
            std = IMAGENET_DEFAULT_STD if in_chans == 3 else (0.5,) * in_chans
        if len(mean) != in_chans or len(std) != in_chans:
            raise ValueError(f'mean and std need {in_chans} values (one per channel), got {len(mean)} and {len(std)}')
        if any(s <= 0 for s in std):
            raise ValueError(f'std must be positive, got {tuple(std)}')
        self.out_chans = in_chans
        self.hflip = hflip
        # Buffers (not parameters): they move with .to(device) and are saved, but are not trained.
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.ndim != 4:
            hint = ' (a single image? add a batch dimension with x[None])' if x.ndim == 3 else ''
            raise self.shape_error(x, f'expected 4 dimensions, got {x.ndim}{hint}')
        if x.shape[1] != self.out_chans:
            hint = ' (channels-last? use x.permute(0, 3, 1, 2))' if x.shape[-1] == self.out_chans else ''
            raise self.shape_error(x, f'expected {self.out_chans} channels in dim 1, got {x.shape[1]}{hint}')
        if not x.is_floating_point():
            raise self.shape_error(x, 'expected a floating-point tensor in [0, 1] '
                                      '(for uint8 images use x.float() / 255)')
        if x.shape[0] == 0 or x.shape[2] < 1 or x.shape[3] < 1:
            raise self.shape_error(x, 'empty batch or image')

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        if self.hflip <= 0:
            return x
        flip = torch.rand(x.shape[0], device=x.device) < self.hflip
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel."""
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        return self.normalize(x), None

    def extra_repr(self) -> str:
        return (f'in_chans={self.out_chans}, mean={tuple(round(v, 4) for v in self.mean.flatten().tolist())}, '
                f'std={tuple(round(v, 4) for v in self.std.flatten().tolist())}, hflip={self.hflip}')
