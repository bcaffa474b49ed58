"""Point-cloud adapter: ``(B, N, 3)`` (or ``(B, N, 6)`` with normals) → 2D images for the shared trunk.

Two modes:

* ``depth`` (default, CPU-friendly): a fixed, non-learned multi-view projection. Each cloud is normalised to the
  unit sphere and looked at from ``num_depth_views`` fixed directions (side views around the up axis, plus top
  and bottom when there are 6 or more); each view is an orthographic depth image (z-buffer: the nearest point
  per pixel wins, via ``scatter_reduce(amax)``; points are splatted into a small pixel neighbourhood so a
  1k-point cloud gives a closed silhouette). The views are stacked as channels: ``(B, V, S, S)``, one trunk pass.
* ``p2p`` (published set-up, after P2P): the cloud is rotated into 4 fixed views; a small learned point encoder
  (pointwise conv 3→8, k-NN edge features → 64 channels, max over the k neighbours; k-NN by ``torch.cdist`` +
  ``topk``, no compiled point ops) computes per-point features that are scattered (max) into the 3×3 pixel
  neighbourhood of each point's position on an ``S × S`` grid spanning the view's x-y range; a light 2D block,
  a cross-view fusion and a 1×1 conv to 3 channels, sigmoid and ImageNet normalisation give
  ``(B·4, 3, S, S)``; the head concatenates the 4 views' features (``view_pool='concat'``).

Train-time augmentation (:meth:`PointAdapter.augment`): random rotation about the up axis, per-axis scale
U(2/3, 3/2) and translation U(-0.2, 0.2) (the usual ``PointcloudScaleAndTranslate``). Note that ``encode``
re-normalises each cloud (``normalize=True``) and the p2p grid spans each view's x-y range, so translation and the
isotropic part of the scale are undone there; the rotation and the aspect-ratio change are what the views see.
Test-time voting: :func:`vote_predict` averages softmax over fixed rotations about the up axis.

Axes: ``up_axis`` (default ``'y'``, the convention of the PointNet/PointNet++ ModelNet40 files; the raw-OFF
reader in :mod:`unimodal.data.modelnet` rotates the z-up meshes to y-up by default).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from ..models.reparam import fuse_conv_bn
from .base import Adapter, register_adapter

_logger = logging.getLogger(__name__)

__all__ = [
    'PointAdapter', 'P2PProjector', 'DepthProjector', 'vote_predict', 'normalize_unit_sphere',
    'view_rotations', 'rotation_about_axis', 'knn_indices',
]

_MODES = ('depth', 'p2p')
_AXES = {'x': 0, 'y': 1, 'z': 2}


def normalize_unit_sphere(xyz: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Centre each cloud ``(B, N, 3)`` at its centroid and divide by its largest point norm."""
    xyz = xyz - xyz.mean(dim=1, keepdim=True)
    scale = xyz.norm(dim=-1).amax(dim=1).clamp_min(eps)
    return xyz / scale[:, None, None]


def rotation_about_axis(angle: torch.Tensor, axis: str = 'y') -> torch.Tensor:
    """Right-handed rotation matrices ``(..., 3, 3)`` by ``angle`` (radians, any shape) about ``axis``."""
    if axis not in _AXES:
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


def _to_y_up(up_axis: str) -> torch.Tensor:
    """Rotation taking ``up_axis`` to +y (the camera frame's up)."""
    if up_axis == 'y':
        return torch.eye(3)
    if up_axis == 'z':  # rotate -90 deg about x: z -> y
        return rotation_about_axis(torch.tensor(-math.pi / 2), 'x')
    if up_axis == 'x':  # rotate +90 deg about z: x -> y
        return rotation_about_axis(torch.tensor(math.pi / 2), 'z')
    raise ValueError(f"up_axis must be one of 'x', 'y', 'z', got {up_axis!r}")


def view_rotations(num_views: int, up_axis: str = 'y', elevation: float = 0.,
                   top_bottom: bool = True) -> torch.Tensor:
    """Fixed camera rotations ``(V, 3, 3)``: row-vector points ``p @ R.T`` land in the camera frame
    (x right, y up, z towards the camera; the image is the x-y plane).

    Side views are spaced evenly in azimuth about the up axis at ``elevation`` degrees (looking down for
    positive values); with ``top_bottom`` and ``num_views >= 6`` two of the views look from the top and the bottom.
    """
    if num_views < 1:
        raise ValueError(f'num_views must be >= 1, got {num_views}')
    up = _to_y_up(up_axis)
    mats = []
    num_side = num_views - 2 if (top_bottom and num_views >= 6) else num_views
    for i in range(num_side):
        az = torch.tensor(2 * math.pi * i / num_side)
        el = torch.tensor(math.radians(elevation))
        mats.append(rotation_about_axis(el, 'x') @ rotation_about_axis(az, 'y') @ up)
    if num_side != num_views:
        for el in (math.pi / 2, -math.pi / 2):  # top (up axis towards the camera), then bottom
            mats.append(rotation_about_axis(torch.tensor(el), 'x') @ up)
    return torch.stack(mats).float()


def _split_normals(x: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    return x[..., :3], (x[..., 3:6] if x.shape[-1] >= 6 else None)


def _rotate_batch(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """Rotate xyz (and normals, if present) of ``(B, N, 3|6)`` by ``rot`` ``(B, 3, 3)`` or ``(3, 3)``."""
    xyz, normals = _split_normals(x)
    rt = rot.transpose(-1, -2).to(x.dtype)
    out = [xyz @ rt]
    if normals is not None:
        out.append(normals @ rt)
    return torch.cat(out, dim=-1)


def knn_indices(xyz: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``(B, N, k)`` of each point's k nearest neighbours (itself included) by ``torch.cdist`` + ``topk``."""
    dist = torch.cdist(xyz, xyz)
    return dist.topk(min(k, xyz.shape[1]), dim=-1, largest=False).indices


class DepthProjector(nn.Module):
    """Non-learned multi-view orthographic depth rendering: ``(B, N, 3)`` → ``(B, V, S, S)``.

    Pixel value: ``0`` where no point projects, else ``0.25 + 0.75 * (z + 1) / 2`` of the nearest point (``z``
    towards the camera, clouds inside the unit sphere), so nearer surfaces are brighter and background stays apart.

    Args:
        num_views: V camera directions (see :func:`view_rotations`).
        image_size: S.
        splat: each point also fills pixels within this Chebyshev radius (1 → 3×3), closing small holes.
        up_axis: the clouds' up axis.
        elevation: elevation in degrees of the side views.
        extent: half-width of the square window in cloud units (1.0 = the unit sphere).
    """

    def __init__(self, num_views: int = 6, image_size: int = 64, splat: int = 1, up_axis: str = 'y',
                 elevation: float = 0., extent: float = 1.0) -> None:
        super().__init__()
        if image_size < 2:
            raise ValueError(f'image_size must be >= 2, got {image_size}')
        if splat < 0:
            raise ValueError(f'splat must be >= 0, got {splat}')
        self.num_views = num_views
        self.image_size = image_size
        self.splat = splat
        self.extent = extent
        self.register_buffer('rotations', view_rotations(num_views, up_axis, elevation), persistent=False)

    @torch.no_grad()
    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        b, n, _ = xyz.shape
        s, v = self.image_size, self.num_views
        cam = torch.einsum('bnj,vij->bvni', xyz.float(), self.rotations)  # (B, V, N, 3)
        uv = cam[..., :2] / self.extent
        col = ((uv[..., 0] + 1) * 0.5 * s).floor().long()
        row = ((1 - uv[..., 1]) * 0.5 * s).floor().long()
        depth = (0.25 + 0.375 * (cam[..., 2] / self.extent + 1)).clamp(0.01, 1.0)
        r = self.splat
        offsets = [(dr, dc) for dr in range(-r, r + 1) for dc in range(-r, r + 1)]
        rows = torch.cat([row + dr for dr, _ in offsets], dim=-1)  # (B, V, N * K)
        cols = torch.cat([col + dc for _, dc in offsets], dim=-1)
        vals = depth.repeat(1, 1, len(offsets))
        inside = (rows >= 0) & (rows < s) & (cols >= 0) & (cols < s)
        index = torch.where(inside, rows * s + cols, torch.full_like(rows, s * s))  # off-grid → dump bin
        img = xyz.new_zeros(b, v, s * s + 1, dtype=torch.float32)
        img.scatter_reduce_(2, index, vals, reduce='amax', include_self=True)
        return img[..., :-1].reshape(b, v, s, s).to(xyz.dtype)


class P2PProjector(nn.Module):
    """Learned point-to-pixel projection (after P2P): ``(B, N, 3|6)`` → ``(B·V, 3, S, S)``.

    Args:
        num_views: V fixed views (4 as published).
        image_size: S (224 as published).
        k: neighbours of the edge features (32).
        use_normals: feed rotated normals to the point encoder (input ``(B, N, 6)``).
        up_axis: the clouds' up axis.
        elevation: elevation in degrees of the 4 views (a small downward look makes opposite views differ).
        embed_chans: width of the pointwise conv (8).
        point_chans: width of the edge features (64).
    """

    def __init__(self, num_views: int = 4, image_size: int = 224, k: int = 32, use_normals: bool = False,
                 up_axis: str = 'y', elevation: float = 30., embed_chans: int = 8, point_chans: int = 64) -> None:
        super().__init__()
        self.num_views = num_views
        self.image_size = image_size
        self.k = k
        self.use_normals = use_normals
        self.register_buffer('rotations', view_rotations(num_views, up_axis, elevation, top_bottom=False),
                             persistent=False)
        in_chans = 6 if use_normals else 3
        # point encoder: pointwise conv, then EdgeConv ([f_j - f_i, f_i] → point_chans, max over neighbours)
        self.point_conv = nn.Conv1d(in_chans, embed_chans, 1, bias=False)
        self.point_bn = nn.BatchNorm1d(embed_chans)
        self.edge_conv = nn.Conv2d(2 * embed_chans, point_chans, 1, bias=False)
        self.edge_bn = nn.BatchNorm2d(point_chans)
        # light 2D block on the scattered feature maps
        self.dw = nn.Conv2d(point_chans, point_chans, 3, padding=1, groups=point_chans, bias=False)
        self.dw_bn = nn.BatchNorm2d(point_chans)
        self.pw = nn.Conv2d(point_chans, point_chans, 1)
        # cross-view fusion: every view receives a projection of the mean over views
        self.fuse = nn.Conv2d(point_chans, point_chans, 1)
        self.to_rgb = nn.Conv2d(point_chans, 3, 1)
        self.register_buffer('mean', torch.tensor(IMAGENET_DEFAULT_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_DEFAULT_STD).reshape(1, 3, 1, 1), persistent=False)

    def point_features(self, pts: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Per-point features ``(B', C, N)`` of ``pts`` ``(B', N, 3|6)``; ``idx`` ``(B', N, k)`` are neighbours."""
        f = F.gelu(self.point_bn(self.point_conv(pts.transpose(1, 2))))  # (B', E, N)
        bv, e, n = f.shape
        kk = idx.shape[-1]
        nbr = torch.gather(f, 2, idx.reshape(bv, 1, n * kk).expand(bv, e, n * kk)).reshape(bv, e, n, kk)
        centre = f.unsqueeze(-1).expand(bv, e, n, kk)
        edge = torch.cat([nbr - centre, centre], dim=1)  # (B', 2E, N, k)
        edge = F.leaky_relu(self.edge_bn(self.edge_conv(edge)), 0.2)
        return edge.amax(dim=-1)  # (B', C, N)

    def scatter(self, feats: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Max-scatter features ``(B', C, N)`` at view coordinates ``xy`` ``(B', N, 2)`` into the 3×3 pixel
        neighbourhood of each point on an ``S × S`` grid spanning the x-y range; empty pixels are 0.

        Implemented as a one-pixel ``scatter_reduce(amax)`` followed by a 3×3 stride-1 max pool, which equals
        scattering every point into its 3×3 neighbourhood (off-grid neighbours dropped), with one feature map
        of memory instead of nine.
        """
        bv, c, n = feats.shape
        s = self.image_size
        lo, hi = xy.amin(dim=1, keepdim=True), xy.amax(dim=1, keepdim=True)
        centre = (lo + hi) / 2
        half = ((hi - lo) / 2).amax(dim=-1, keepdim=True).clamp_min(1e-6)  # keep the aspect ratio
        uv = ((xy - centre) / half + 1) * 0.5 * (s - 1)  # [0, S-1]
        col = uv[..., 0].round().long().clamp(0, s - 1)
        row = (s - 1 - uv[..., 1].round().long()).clamp(0, s - 1)
        index = (row * s + col).unsqueeze(1).expand(bv, c, n)
        grid = feats.new_full((bv, c, s * s), float('-inf'))
        grid = grid.scatter_reduce(2, index, feats, reduce='amax', include_self=True)
        grid = F.max_pool2d(grid.reshape(bv, c, s, s), 3, stride=1, padding=1)
        return torch.where(torch.isinf(grid), torch.zeros_like(grid), grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        v = self.num_views
        pts = x if self.use_normals else x[..., :3]
        idx = knn_indices(pts[..., :3], self.k)  # rotation invariant: one graph for all views
        views = torch.stack([_rotate_batch(pts, self.rotations[i]) for i in range(v)], dim=1)  # (B, V, N, C)
        views = views.reshape(b * v, n, -1)
        feats = self.point_features(views, idx.repeat_interleave(v, dim=0))
        grid = self.scatter(feats, views[..., :2])  # (B·V, C, S, S)
        grid = grid + self.pw(F.gelu(self.dw_bn(self.dw(grid))))
        per_view = grid.reshape(b, v, *grid.shape[1:])
        fused = self.fuse(per_view.mean(dim=1))  # (B, C, S, S)
        grid = (per_view + fused.unsqueeze(1)).reshape_as(grid)
        img = torch.sigmoid(self.to_rgb(grid))
        return (img - self.mean) / self.std

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the eval-mode BatchNorms into the preceding convolutions (same function)."""
        for conv_name, bn_name in (('point_conv', 'point_bn'), ('edge_conv', 'edge_bn'), ('dw', 'dw_bn')):
            conv, bn = getattr(self, conv_name), getattr(self, bn_name)
            if isinstance(bn, nn.Identity):
                continue
            w = conv.weight if conv.weight.dim() == 4 else conv.weight.unsqueeze(-1)
            kernel, bias = fuse_conv_bn(w, bn, conv.bias)
            fused = type(conv)(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride,
                               padding=conv.padding, groups=conv.groups, bias=True).to(conv.weight)
            fused.weight.copy_(kernel.reshape_as(conv.weight))
            fused.bias.copy_(bias)
            setattr(self, conv_name, fused)
            setattr(self, bn_name, nn.Identity())


@register_adapter('point')
class PointAdapter(Adapter):
    """Point clouds ``(B, N, 3)`` or ``(B, N, 6)`` (xyz + normals) → trunk input.

    Args:
        mode: ``'depth'`` (default; ``(B, V, S, S)`` depth views as channels, one trunk pass) or ``'p2p'``
            (published learned projection; ``(B·4, 3, S, S)``, views concatenated in the head).
        image_size: S; default 64 for ``depth`` and 224 (as published) for ``p2p``.
        num_depth_views: V of ``depth`` mode (6: four side views, top and bottom).
        splat: ``depth`` mode pixel radius of each point (1 → 3×3).
        k: ``p2p`` neighbours of the edge features.
        use_normals: ``p2p`` only: feed the normals (input must be ``(B, N, 6)``). ``depth`` ignores normals.
        normalize: normalise each cloud to the unit sphere inside :meth:`encode`.
        up_axis: the clouds' up axis (rotation augmentation, voting and view directions).
        augment_rotate: random rotation about the up axis in training.
        augment_scale: per-axis scale range in training (``None`` to disable).
        augment_translate: per-axis translation bound in training (0 to disable).
    """

    head_kind = 'classification'
    input_desc = '(B, N, 3) float point clouds (xyz) or (B, N, 6) (xyz + normals)'

    def __init__(self, mode: str = 'depth', image_size: Optional[int] = None, num_depth_views: int = 6,
                 splat: int = 1, k: int = 32, use_normals: bool = False, normalize: bool = True,
                 up_axis: str = 'y', augment_rotate: bool = True,
                 augment_scale: Optional[Sequence[float]] = (2. / 3., 3. / 2.),
                 augment_translate: float = 0.2) -> None:
        super().__init__()
        if mode not in _MODES:
            raise ValueError(f'point adapter mode must be one of {_MODES}, got {mode!r}')
        if up_axis not in _AXES:
            raise ValueError(f"up_axis must be one of 'x', 'y', 'z', got {up_axis!r}")
        if use_normals and mode != 'p2p':
            raise ValueError("use_normals applies to mode='p2p' only (depth views ignore normals)")
        if augment_scale is not None and (len(augment_scale) != 2 or not 0 < augment_scale[0] <= augment_scale[1]):
            raise ValueError(f'augment_scale must be (low, high) with 0 < low <= high, got {augment_scale!r}')
        self.mode = mode
        self.up_axis = up_axis
        self.normalize = normalize
        self.use_normals = use_normals
        self.augment_rotate = augment_rotate
        self.augment_scale = tuple(augment_scale) if augment_scale is not None else None
        self.augment_translate = float(augment_translate)
        if mode == 'depth':
            self.image_size = image_size or 64
            self.projector = DepthProjector(num_depth_views, self.image_size, splat=splat, up_axis=up_axis)
            self.out_chans = num_depth_views
            self.num_views = 1
            self.view_pool = 'mean'
        else:
            self.image_size = image_size or 224
            self.projector = P2PProjector(4, self.image_size, k=k, use_normals=use_normals, up_axis=up_axis)
            self.out_chans = 3
            self.num_views = 4
            self.view_pool = 'concat'

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if x.dim() != 3:
            raise self.shape_error(x, f'expected 3 dimensions (batch, points, coordinates), got {x.dim()}')
        if x.shape[-1] not in (3, 6):
            raise self.shape_error(x, f'expected 3 (xyz) or 6 (xyz + normals) values per point, got {x.shape[-1]}')
        if self.use_normals and x.shape[-1] != 6:
            raise self.shape_error(x, 'use_normals=True needs (B, N, 6) input')
        if x.shape[0] < 1 or x.shape[1] < 1:
            raise self.shape_error(x, 'empty batch or cloud')
        if not x.is_floating_point():
            raise self.shape_error(x, 'expected a floating-point tensor')
        if not bool(torch.isfinite(x).all()):
            raise self.shape_error(x, 'contains NaN or infinite coordinates')

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random rotation about the up axis, per-axis scale and translation, per sample."""
        b = x.shape[0]
        if self.augment_rotate:
            angle = torch.rand(b, device=x.device) * (2 * math.pi)
            x = _rotate_batch(x, rotation_about_axis(angle, self.up_axis))
        xyz, normals = _split_normals(x)
        if self.augment_scale is not None:
            lo, hi = self.augment_scale
            scale = torch.empty(b, 1, 3, device=x.device, dtype=x.dtype).uniform_(lo, hi)
            xyz = xyz * scale
            if normals is not None:  # normals transform by the inverse transpose
                normals = F.normalize(normals / scale, dim=-1)
        if self.augment_translate > 0:
            t = self.augment_translate
            xyz = xyz + torch.empty(b, 1, 3, device=x.device, dtype=x.dtype).uniform_(-t, t)
        return xyz if normals is None else torch.cat([xyz, normals], dim=-1)

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        xyz, normals = _split_normals(x)
        if self.normalize:
            xyz = normalize_unit_sphere(xyz)
        if self.mode == 'depth':
            return self.projector(xyz), None
        pts = torch.cat([xyz, normals], dim=-1) if (self.use_normals and normals is not None) else xyz
        return self.projector(pts), None

    def reparameterize(self) -> None:
        if self.mode == 'p2p':
            self.projector.reparameterize()


@torch.no_grad()
def vote_predict(model: nn.Module, points: torch.Tensor, num_votes: int = 12, up_axis: Optional[str] = None,
                 scales: Optional[Sequence[float]] = None) -> torch.Tensor:
    """Test-time voting: mean softmax of ``model`` over ``num_votes`` fixed rotations about the up axis.

    Args:
        model: a task model (run in eval mode; its mode is restored afterwards).
        points: ``(B, N, 3|6)`` clouds.
        num_votes: rotations at angles ``2πi / num_votes``; 1 means a single plain pass.
        up_axis: rotation axis; default the model adapter's ``up_axis`` (else ``'y'``).
        scales: optional isotropic scales to vote over as well (e.g. ``(0.9, 1.0, 1.1)``).

    Returns:
        ``(B, num_classes)`` averaged class probabilities.
    """
    if num_votes < 1:
        raise ValueError(f'num_votes must be >= 1, got {num_votes}')
    adapter = getattr(model, 'adapter', None)
    if up_axis is None:
        up_axis = getattr(adapter, 'up_axis', 'y')
    was_training = model.training
    model.eval()
    try:
        probs = None
        count = 0
        for i in range(num_votes):
            angle = torch.tensor(2 * math.pi * i / num_votes, device=points.device)
            rotated = _rotate_batch(points, rotation_about_axis(angle, up_axis).to(points.device))
            for s in (scales or (1.0,)):
                batch = rotated if s == 1.0 else torch.cat([rotated[..., :3] * s, rotated[..., 3:]], dim=-1)
                p = model(batch).float().softmax(dim=-1)
                probs = p if probs is None else probs + p
                count += 1
        return probs / count
    finally:
        model.train(was_training)
