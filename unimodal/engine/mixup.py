"""Batch mixing for classification: mixup (any input: waveforms, spectrograms, images, clips) and cutmix.

Mixup blends whole samples with the batch reversed, one λ per batch (timm's batch mode, as the published video
recipe uses it; the audio recipe mixes per sample in its reader instead). Cutmix pastes a box over the last two
dimensions and is used only for inputs with at least two spatial dimensions (images ``(B, C, H, W)``, clips
``(B, C, T, H, W)`` or ``(B, T, C, H, W)``). Targets become soft labels (with label smoothing), used by
cross-entropy with probabilities or by BCE.
"""
from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ['MixupCutmix', 'smooth_one_hot']


def smooth_one_hot(target: torch.Tensor, num_classes: int, smoothing: float = 0.) -> torch.Tensor:
    """One-hot targets with ``smoothing`` spread uniformly: on = 1 - s + s/C, off = s/C."""
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device, dtype=torch.float32)
    return out.scatter_(1, target.long().view(-1, 1), 1. - smoothing + off)


class MixupCutmix:
    """Mix a batch with its reverse (timm's convention) and return soft targets.

    Args:
        num_classes: classes of the targets.
        mixup_alpha: Beta parameter of mixup (0 = off).
        cutmix_alpha: Beta parameter of cutmix (0 = off); ignored for inputs with fewer than 3 dims.
        prob: probability that a batch is mixed at all.
        switch_prob: with both enabled, probability of cutmix instead of mixup.
        label_smoothing: smoothing applied to the one-hot targets before mixing.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0., cutmix_alpha: float = 0., prob: float = 1.,
                 switch_prob: float = 0.5, label_smoothing: float = 0.) -> None:
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing

    @property
    def enabled(self) -> bool:
        return (self.mixup_alpha > 0 or self.cutmix_alpha > 0) and self.prob > 0

    def _params(self, x: torch.Tensor) -> Tuple[float, bool]:
        can_cut = self.cutmix_alpha > 0 and x.dim() >= 3
        if np.random.rand() >= self.prob or not (self.mixup_alpha > 0 or can_cut):
            return 1.0, False
        use_cut = can_cut and (self.mixup_alpha <= 0 or np.random.rand() < self.switch_prob)
        alpha = self.cutmix_alpha if use_cut else self.mixup_alpha
        return float(np.random.beta(alpha, alpha)), use_cut

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        lam, use_cut = self._params(x)
        y = smooth_one_hot(target, self.num_classes, self.label_smoothing)
        if lam == 1.0:
            return x, y
        flipped = x.flip(0)
        if use_cut:
            lam = self._cutmix_(x, flipped, lam)
        else:
            x = x * lam + flipped * (1. - lam)
        return x, y * lam + y.flip(0) * (1. - lam)

    @staticmethod
    def _cutmix_(x: torch.Tensor, flipped: torch.Tensor, lam: float) -> float:
        """Paste a box of ``flipped`` into ``x`` in place; return the area-corrected λ."""
        h, w = x.shape[-2:]
        ratio = math.sqrt(1. - lam)
        ch, cw = int(h * ratio), int(w * ratio)
        cy, cx = np.random.randint(h), np.random.randint(w)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        x[..., y0:y1, x0:x1] = flipped[..., y0:y1, x0:x1]
        return 1. - (y1 - y0) * (x1 - x0) / float(h * w)


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy against probability targets."""
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
