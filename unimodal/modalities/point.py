"""Point-cloud adapter: ``(B, N, 3)`` (or ``(B, N, 6)`` with normals) → 2D images for the shared trunk.

Three modes:

* ``depth`` (default, CPU-friendly): a fixed, non-learned multi-view projection. Each cloud is normalised to the
  unit sphere and looked at from ``num_depth_views`` fixed directions (side views around the up axis, plus top
  and bottom when there are 6 or more); each view is an orthographic depth image (z-buffer: the nearest point
  per pixel wins, via ``scatter_reduce(amax)``; points are splatted into a small pixel neighbourhood so a
  1k-point cloud gives a closed silhouette). The views are stacked as channels: ``(B, V, S, S)``, one trunk pass.
* ``p2p``: the published P2P projector (:mod:`.point_p2p`, 1.16 M parameters): point features on the canonical
  cloud, a random pose (θ about up, tilt φ) in training and a fixed one at test, 4 published views, 3×3 sum-splat,
  BasicBlock and transformer view fusion, RGB ``(B·4, 3, S, S)``; the head concatenates the 4 views' features.
* ``p2p_light`` (faster, 10 k parameters): the cloud is rotated into 4 views at +30° elevation about the up axis;
  a small point encoder (pointwise conv 3→8 + BN + GELU, k-NN edge features → 64 + BN + LeakyReLU, max over the
  k neighbours) on each view's rotated points, features scattered (max) into the 3×3 pixel neighbourhood on an
  ``S × S`` grid spanning the view's x-y range, a light 2D block, a mean-over-views fusion, then the same RGB output.

k-NN everywhere is ``torch.cdist`` + ``topk`` (no compiled point ops).

Train-time augmentation: ``depth`` and ``p2p_light`` (:meth:`PointAdapter.augment`): random rotation about the up
axis, per-axis scale U(2/3, 3/2) and translation U(-0.2, 0.2) (the usual ``PointcloudScaleAndTranslate``), applied to
the cloud; ``encode`` re-normalises it (``normalize=True``), so translation and the isotropic part of the scale are
undone there. ``p2p`` (as published): the pose draw θ ~ U(0.04, 1.94)π, φ ~ U(-0.4, -0.2)π and the same per-axis
scale / translation, applied in :meth:`PointAdapter.encode` to the projected copy only (the point features must see
the un-augmented cloud, so ``augment`` leaves the batch alone in this mode).

Test time: :func:`vote_predict` averages softmax over fixed rotations about the up axis; :func:`predict_poses` runs a
``p2p`` model at given poses (the published protocol: :func:`~.point_p2p.published_test_poses`, accuracy over all
8·N predictions, no voting).

Axes: ``up_axis`` (default ``'y'``, the convention of the PointNet/PointNet++ ModelNet40 files; the raw-OFF
reader in :mod:`unimodal.data.modelnet` rotates the z-up meshes to y-up by default).
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from .base import Adapter, register_adapter
from .point_ops import (AXES, edge_features, fold_bn_into_conv, knn_indices, normalize_unit_sphere,
                        random_scale_translate, rotate_batch, rotation_about_axis, split_normals, to_y_up)
from .point_p2p import (PUBLISHED_FRAME, TRAIN_PHI, TRAIN_THETA, P2PProjector, pose_matrix, published_test_poses,
                        sample_poses)

_logger = logging.getLogger(__name__)

__all__ = [
    'PointAdapter', 'P2PProjector', 'P2PLightProjector', 'DepthProjector', 'vote_predict', 'predict_poses',
    'published_test_poses', 'normalize_unit_sphere', 'view_rotations', 'rotation_about_axis', 'knn_indices',
]

_MODES = ('depth', 'p2p', 'p2p_light')


def view_rotations(num_views: int, up_axis: str = 'y', elevation: float = 0.,
                   top_bottom: bool = True) -> torch.Tensor:
    """Fixed camera rotations ``(V, 3, 3)``: row-vector points ``p @ R.T`` land in the camera frame
    (x right, y up, z towards the camera; the image is the x-y plane).

    Side views are spaced evenly in azimuth about the up axis at ``elevation`` degrees (looking down for
    positive values); with ``top_bottom`` and ``num_views >= 6`` two of the views look from the top and the bottom.
    """
    if num_views < 1:
        raise ValueError(f'num_views must be >= 1, got {num_views}')
    up = to_y_up(up_axis)
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


class P2PLightProjector(nn.Module):
    """Light learned point-to-pixel projection (``mode='p2p_light'``): ``(B, N, 3|6)`` → ``(B·V, 3, S, S)``.

    Args:
        num_views: V fixed views (4).
        image_size: S (224).
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
        edge = F.leaky_relu(self.edge_bn(self.edge_conv(edge_features(f, idx))), 0.2)
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
        views = torch.stack([rotate_batch(pts, self.rotations[i]) for i in range(v)], dim=1)  # (B, V, N, C)
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
            setattr(self, conv_name, fold_bn_into_conv(conv, bn))
            setattr(self, bn_name, nn.Identity())


@register_adapter('point')
class PointAdapter(Adapter):
    """Point clouds ``(B, N, 3)`` or ``(B, N, 6)`` (xyz + normals) → trunk input.

    Args:
        mode: ``'depth'`` (default; ``(B, V, S, S)`` depth views as channels, one trunk pass), ``'p2p'`` (the
            published projector; ``(B·4, 3, S, S)``, views concatenated in the head) or ``'p2p_light'`` (faster
            light projector, same output layout).
        image_size: S; default 64 for ``depth`` and 224 (as published) for the p2p modes.
        num_depth_views: V of ``depth`` mode (6: four side views, top and bottom).
        splat: ``depth`` mode pixel radius of each point (1 → 3×3).
        k: p2p modes: neighbours of the edge features.
        use_normals: ``p2p_light`` only: feed the normals (input must be ``(B, N, 6)``). ``depth`` and ``p2p``
            ignore normals.
        normalize: normalise each cloud to the unit sphere inside :meth:`encode`.
        up_axis: the clouds' up axis (augmentation, voting and view directions).
        augment_rotate: training: random rotation about the up axis (``p2p``: the published pose draw, θ in
            ``train_theta`` and tilt φ in ``train_phi``; without it training uses ``eval_pose``).
        augment_scale: per-axis scale range in training (``None`` to disable).
        augment_translate: per-axis translation bound in training (0 to disable).
        train_theta: ``p2p``: range of the training azimuth θ, in units of π (published ``(0.04, 1.94)``).
        train_phi: ``p2p``: range of the training tilt φ, in units of π (published ``(-0.4, -0.2)``).
        eval_pose: ``p2p``: the ``(θ, φ)`` pose, in units of π, of a plain evaluation pass (default the first
            published test pose ``(0.1, -0.35)``; :func:`predict_poses` runs any set of poses).
    """

    head_kind = 'classification'
    input_desc = '(B, N, 3) float point clouds (xyz) or (B, N, 6) (xyz + normals)'

    def __init__(self, mode: str = 'depth', image_size: Optional[int] = None, num_depth_views: int = 6,
                 splat: int = 1, k: int = 32, use_normals: bool = False, normalize: bool = True,
                 up_axis: str = 'y', augment_rotate: bool = True,
                 augment_scale: Optional[Sequence[float]] = (2. / 3., 3. / 2.),
                 augment_translate: float = 0.2, train_theta: Sequence[float] = TRAIN_THETA,
                 train_phi: Sequence[float] = TRAIN_PHI, eval_pose: Sequence[float] = (0.1, -0.35)) -> None:
        super().__init__()
        mode = self.option('mode', mode, str, choices=_MODES)
        up_axis = self.option('up_axis', up_axis, str, choices=tuple(AXES))
        image_size = self.option('image_size', image_size, Optional[int], lo=1)
        num_depth_views = self.option('num_depth_views', num_depth_views, int, lo=1)
        splat = self.option('splat', splat, int, lo=0)
        k = self.option('k', k, int, lo=1)
        for name, flag in (('use_normals', use_normals), ('normalize', normalize), ('augment_rotate', augment_rotate)):
            self.option(name, flag, bool)
        augment_translate = self.option('augment_translate', augment_translate, float, lo=0)
        augment_scale = self.option('augment_scale', augment_scale, Optional[List[float]], length=2)
        train_theta, train_phi, eval_pose = (self.option(name, pair, List[float], length=2) for name, pair in (
            ('train_theta', train_theta), ('train_phi', train_phi), ('eval_pose', eval_pose)))
        if use_normals and mode != 'p2p_light':
            raise ValueError(f"use_normals applies to mode='p2p_light' only ({mode!r} ignores normals)")
        if augment_scale is not None and not 0 < augment_scale[0] <= augment_scale[1]:
            raise ValueError(f'augment_scale must be (low, high) with 0 < low <= high, got {augment_scale!r}')
        for name, pair in (('train_theta', train_theta), ('train_phi', train_phi)):
            if not pair[0] <= pair[1]:
                raise ValueError(f'{name} must be (low, high) in units of pi with low <= high, got {pair!r}')
        self.mode = mode
        self.up_axis = up_axis
        self.normalize = normalize
        self.use_normals = use_normals
        self.augment_rotate = augment_rotate
        self.augment_scale = tuple(augment_scale) if augment_scale is not None else None
        self.augment_translate = float(augment_translate)
        self.train_theta, self.train_phi = tuple(train_theta), tuple(train_phi)
        self.eval_pose = tuple(eval_pose)
        self._pose_override: Optional[torch.Tensor] = None
        if mode == 'depth':
            self.image_size = image_size or 64
            self.projector = DepthProjector(num_depth_views, self.image_size, splat=splat, up_axis=up_axis)
            self.out_chans = num_depth_views
            self.num_views = 1
            self.view_pool = 'mean'
            return
        self.image_size = image_size or 224
        if mode == 'p2p':
            self.projector = P2PProjector(self.image_size, k=k)
            # input frame -> the published canonical frame (z up)
            self.register_buffer('frame', PUBLISHED_FRAME @ to_y_up(up_axis), persistent=False)
        else:
            self.projector = P2PLightProjector(4, self.image_size, k=k, use_normals=use_normals, up_axis=up_axis)
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
        """Random rotation about the up axis, per-axis scale and translation, per sample (``depth``, ``p2p_light``).

        ``p2p`` returns ``x`` unchanged: its published augmentation moves only the projected copy while the point
        features see the un-augmented cloud, so it is applied inside :meth:`encode` in training mode.
        """
        if self.mode == 'p2p':
            return x
        b = x.shape[0]
        if self.augment_rotate:
            angle = torch.rand(b, device=x.device) * (2 * math.pi)
            x = rotate_batch(x, rotation_about_axis(angle, self.up_axis))
        xyz, normals = split_normals(x)
        xyz, scale = random_scale_translate(xyz, self.augment_scale, self.augment_translate)
        if normals is not None and scale is not None:  # normals transform by the inverse transpose
            normals = F.normalize(normals / scale, dim=-1)
        return xyz if normals is None else torch.cat([xyz, normals], dim=-1)

    def poses(self, batch: int, device: Optional[torch.device] = None) -> torch.Tensor:
        """``p2p`` poses ``(batch, 2)`` = ``(θ, φ)`` in radians for this pass: a :meth:`fixed_pose` if one is set,
        else random draws in training (``augment_rotate``), else ``eval_pose``."""
        if self._pose_override is not None:
            return self._pose_override.to(device).expand(batch, 2)
        if self.training and self.augment_rotate:
            return sample_poses(batch, self.train_theta, self.train_phi, device=device)
        return (torch.tensor(self.eval_pose, device=device) * math.pi).expand(batch, 2)

    @contextlib.contextmanager
    def fixed_pose(self, pose: torch.Tensor) -> Iterator[None]:
        """Within the block every ``p2p`` pass uses ``pose`` = ``(θ, φ)`` radians (a tensor of 2)."""
        if self.mode != 'p2p':
            raise ValueError(f"fixed_pose needs mode='p2p', this adapter is {self.mode!r}")
        previous, self._pose_override = self._pose_override, torch.as_tensor(pose, dtype=torch.float32).reshape(2)
        try:
            yield
        finally:
            self._pose_override = previous

    def p2p_clouds(self, xyz: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(canonical, posed)`` clouds of ``(B, N, 3)`` for the ``p2p`` projector.

        ``canonical = p @ F.T`` (the published z-up frame); ``posed = canonical @ R(θ, φ).T`` and, in training, per
        axis ``posed * s + t`` (scale and translation touch the projected copy only, as published). At least float32,
        also under autocast.
        """
        dtype = torch.promote_types(xyz.dtype, torch.float32)
        with torch.autocast(xyz.device.type, enabled=False):  # geometry in float32 (bf16 would blur the grid)
            canonical = xyz.to(dtype) @ self.frame.T.to(dtype)
            rot = pose_matrix(self.poses(xyz.shape[0], xyz.device)).to(dtype)
            posed = canonical @ rot.transpose(-1, -2)
            if self.training:
                posed, _ = random_scale_translate(posed, self.augment_scale, self.augment_translate)
        return canonical, posed

    def camera_matrices(self, poses: torch.Tensor) -> torch.Tensor:
        """``p2p`` cameras ``(P, 4, 3, 3)`` of ``poses`` ``(P, 2)`` radians: an input-frame point ``p`` lands at
        ``E_k R(θ, φ) F p`` in view ``k`` (image = x, y; the camera sits on +z)."""
        poses = torch.as_tensor(poses, dtype=torch.float32, device=self.frame.device)
        return self.projector.views @ pose_matrix(poses).unsqueeze(1) @ self.frame

    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        xyz, normals = split_normals(x)
        if self.normalize:
            xyz = normalize_unit_sphere(xyz)
        if self.mode == 'depth':
            return self.projector(xyz), None
        if self.mode == 'p2p':
            return self.projector(*self.p2p_clouds(xyz)), None
        pts = torch.cat([xyz, normals], dim=-1) if (self.use_normals and normals is not None) else xyz
        return self.projector(pts), None

    def reparameterize(self) -> None:
        if self.mode != 'depth':
            self.projector.reparameterize()


@torch.no_grad()
def predict_poses(model: nn.Module, points: torch.Tensor, poses: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Logits ``(P, B, num_classes)`` of a ``p2p`` model at each pose (default: the 8 published test poses).

    The published protocol scores all ``P·B`` predictions (``(logits.argmax(-1) == labels).float().mean()``), no
    voting. The model runs in eval mode; its mode is restored afterwards.

    Args:
        model: a task model whose ``adapter`` is a :class:`PointAdapter` in ``mode='p2p'``.
        points: ``(B, N, 3|6)`` clouds.
        poses: ``(P, 2)`` = ``(θ, φ)`` in radians.
    """
    adapter = getattr(model, 'adapter', None)
    if not isinstance(adapter, PointAdapter) or adapter.mode != 'p2p':
        raise ValueError("predict_poses needs a model whose adapter is PointAdapter(mode='p2p')")
    poses = published_test_poses() if poses is None else torch.as_tensor(poses, dtype=torch.float32)
    if poses.dim() != 2 or poses.shape[-1] != 2:
        raise ValueError(f'poses must be (P, 2) = (theta, phi) radians, got shape {tuple(poses.shape)}')
    was_training = model.training
    model.eval()
    try:
        out = []
        for pose in poses:
            with adapter.fixed_pose(pose):
                out.append(model(points))
        return torch.stack(out)
    finally:
        model.train(was_training)


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
            rotated = rotate_batch(points, rotation_about_axis(angle, up_axis).to(points.device))
            for s in (scales or (1.0,)):
                batch = rotated if s == 1.0 else torch.cat([rotated[..., :3] * s, rotated[..., 3:]], dim=-1)
                p = model(batch).float().softmax(dim=-1)
                probs = p if probs is None else probs + p
                count += 1
        return probs / count
    finally:
        model.train(was_training)
