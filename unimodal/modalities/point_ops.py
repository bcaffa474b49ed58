"""Small pure tensor functions shared by the point-cloud projectors (:mod:`.point`, :mod:`.point_p2p`).

Conventions: clouds are row vectors ``(B, N, 3)`` (or ``(B, N, 6)`` with normals); a rotation ``R`` acts as
``p @ R.T`` (i.e. ``R p`` on column vectors). All rotations are right-handed.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ..models.reparam import fuse_conv_bn

__all__ = [
    'AXES', 'normalize_unit_sphere', 'rotation_about_axis', 'to_y_up', 'split_normals', 'rotate_batch',
    'knn_indices', 'edge_features', 'random_scale_translate', 'fold_bn_into_conv',
]

AXES = {'x': 0, 'y': 1, 'z': 2}


def normalize_unit_sphere(xyz: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Centre each cloud ``(B, N, 3)`` at its centroid and divide by its largest point norm."""
    xyz = xyz - xyz.mean(dim=1, keepdim=True)
    scale = xyz.norm(dim=-1).amax(dim=1).clamp_min(eps)
    return xyz / scale[:, None, None]


def rotation_about_axis(angle: torch.Tensor, axis: str = 'y') -> torch.Tensor:
    """Right-handed rotation matrices ``(..., 3, 3)`` by ``angle`` (radians, any shape) about ``axis``.

    ``R_x(a) = [[1, 0, 0], [0, c, -s], [0, s, c]]``, ``R_y(a) = [[c, 0, s], [0, 1, 0], [-s, 0, c]]``,
    ``R_z(a) = [[c, -s, 0], [s, c, 0], [0, 0, 1]]`` with ``c = cos a``, ``s = sin a``.
    """
    if axis not in AXES:
        raise ValueError(f"axis must be one of 'x', 'y', 'z', got {axis!r}")
    c, s = torch.cos(angle), torch.sin(angle)
    one, zero = torch.ones_like(angle), torch.zeros_like(angle)
    if axis == 'x':
        rows = [[one, zero, zero], [zero, c, -s], [zero, s, c]]
    elif axis == 'y':
        rows = [[c, zero, s], [zero, one, zero], [-s, zero, c]]
    else:
        rows = [[c, -s, zero], [s, c, zero], [zero, zero, one]]
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def to_y_up(up_axis: str) -> torch.Tensor:
    """Rotation ``(3, 3)`` taking ``up_axis`` to +y: identity for y, ``R_x(-π/2)`` for z, ``R_z(π/2)`` for x."""
    if up_axis == 'y':
        return torch.eye(3)
    if up_axis == 'z':
        return rotation_about_axis(torch.tensor(-math.pi / 2), 'x')
    if up_axis == 'x':
        return rotation_about_axis(torch.tensor(math.pi / 2), 'z')
    raise ValueError(f"up_axis must be one of 'x', 'y', 'z', got {up_axis!r}")


def split_normals(x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(xyz, normals)`` of ``(B, N, 3|6)``; normals are ``None`` for 3 values per point."""
    return x[..., :3], (x[..., 3:6] if x.shape[-1] >= 6 else None)


def rotate_batch(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """``p @ R.T`` for xyz (and normals, if present) of ``(B, N, 3|6)``; ``rot`` is ``(B, 3, 3)`` or ``(3, 3)``."""
    xyz, normals = split_normals(x)
    rt = rot.transpose(-1, -2).to(x.dtype)
    out = [xyz @ rt]
    if normals is not None:
        out.append(normals @ rt)
    return torch.cat(out, dim=-1)


@torch.no_grad()
def knn_indices(xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, N, k)`` of each point's k nearest neighbours (itself included) by ``torch.cdist`` + ``topk``.

    ``k`` is capped at N. No gradient flows through the choice of neighbours. Distances in at least float32, also
    under autocast.
    """
    with torch.autocast(xyz.device.type, enabled=False):
        xyz = xyz.to(torch.promote_types(xyz.dtype, torch.float32))
        dist = torch.cdist(xyz, xyz)
    return dist.topk(min(k, xyz.shape[1]), dim=-1, largest=False).indices


def edge_features(f: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """EdgeConv input ``[f_j - f_i, f_i]`` ``(B, 2C, N, k)`` of features ``f`` ``(B, C, N)`` over neighbours
    ``j ∈ idx[b, i]`` (``idx`` ``(B, N, k)``)."""
    b, c, n = f.shape
    k = idx.shape[-1]
    nbr = torch.gather(f, 2, idx.reshape(b, 1, n * k).expand(b, c, n * k)).reshape(b, c, n, k)
    centre = f.unsqueeze(-1).expand(b, c, n, k)
    return torch.cat([nbr - centre, centre], dim=1)


def random_scale_translate(xyz: torch.Tensor, scale_range: Optional[Sequence[float]],
                           translate: float) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Per-sample, per-axis ``p * s + t`` with ``s ~ U(scale_range)`` and ``t ~ U(-translate, translate)``
    (``PointcloudScaleAndTranslate``); ``scale_range=None`` or ``translate=0`` skip that part.

    Returns:
        The moved ``(B, N, 3)`` cloud and the scale ``(B, 1, 3)`` drawn (``None`` if none), so normals can follow.
    """
    b = xyz.shape[0]
    scale = None
    if scale_range is not None:
        lo, hi = scale_range
        scale = torch.empty(b, 1, 3, device=xyz.device, dtype=xyz.dtype).uniform_(lo, hi)
        xyz = xyz * scale
    if translate > 0:
        xyz = xyz + torch.empty(b, 1, 3, device=xyz.device, dtype=xyz.dtype).uniform_(-translate, translate)
    return xyz, scale


@torch.no_grad()
def fold_bn_into_conv(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> nn.Module:
    """A new convolution (same type, stride, padding, groups; with bias) equal to ``bn(conv(x))`` in eval mode."""
    w = conv.weight if conv.weight.dim() == 4 else conv.weight.unsqueeze(-1)
    kernel, bias = fuse_conv_bn(w, bn, conv.bias)
    fused = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                       padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=True).to(conv.weight)
    fused.weight.copy_(kernel.reshape_as(conv.weight))
    fused.bias.copy_(bias)
    return fused
