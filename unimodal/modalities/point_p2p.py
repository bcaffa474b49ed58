"""The published P2P projector of UniRepLKNet's point-cloud set-up (``PointAdapter(mode='p2p')``).

A cloud becomes 4 RGB images ``(B·4, 3, S, S)``:

1. **Point features on the canonical cloud** (same for every view and every pose):
   Conv1d 3→8 (bias, no norm) → k-NN(32) edge features ``[f_j - f_i, f_i]`` → Conv2d 16→64 (no bias) →
   GroupNorm(4) → LeakyReLU(0.2) → max over neighbours → Conv1d 64→64.
2. **Pose and views.** The canonical cloud lives in the published frame (z up; a y-up source point
   ``(x, y, z)`` is ``(-z, -x, y)`` there, :data:`PUBLISHED_FRAME`). A pose ``(θ, φ)`` turns it by
   :func:`pose_matrix` (the original ``rotate_theta_phi``); training draws θ ∈ [0.04, 1.94]π, φ ∈ [-0.4, -0.2]π and
   then scales / translates per axis (the projected copy only). Each of the 4 views turns the posed cloud by the
   Euler rotation ``[kπ/2, 0, π/2]`` (:func:`view_matrices`) and drops z.
3. **Sum-splat** of the point features at each point's pixel and its 8 neighbours on the published grid
   (:func:`splat_pixels`, :func:`splat_sum`).
4. timm ``BasicBlock(64)`` + 1×1 conv, the transformer view fusion (:class:`MultiViewFusion`), 1×1 conv → 3,
   sigmoid, ImageNet normalisation.

1 157 987 parameters (fusion 1 074 304), as published.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import Mlp
from timm.models.resnet import BasicBlock

from .point_ops import edge_features, fold_bn_into_conv, knn_indices, rotation_about_axis

__all__ = [
    'PUBLISHED_FRAME', 'NUM_VIEWS', 'TRAIN_THETA', 'TRAIN_PHI', 'TEST_PHI', 'pose_matrix', 'euler_matrix',
    'view_matrices', 'published_test_poses', 'sample_poses', 'splat_pixels', 'splat_sum', 'EdgePointEncoder',
    'TokenSelfAttention', 'TokenBlock', 'MultiViewFusion', 'P2PProjector',
]

# y-up source (x, y, z) -> published frame (-z, -x, y): the original reader's permutation, a proper rotation.
PUBLISHED_FRAME = torch.tensor([[0., 0., -1.], [-1., 0., 0.], [0., 1., 0.]])
NUM_VIEWS = 4
TRAIN_THETA = (0.04, 1.94)  # units of π
TRAIN_PHI = (-0.4, -0.2)    # units of π
TEST_PHI = -0.35            # units of π


def pose_matrix(poses: torch.Tensor) -> torch.Tensor:
    """Pose rotations ``(..., 3, 3)`` of ``poses`` ``(..., 2)`` = ``(θ, φ)`` in radians: ``R = R_y(φ) R_z(-θ)``.

    Equal to the original ``rotate_theta_phi``: ``Rod(-θ, e_z) Rod(-φ, v)`` with ``v = (sin θ, -cos θ, 0)``
    (Rodrigues rotations); since ``v = R_z(θ)(-e_y)``, ``Rod(-φ, v) = R_z(θ) R_y(φ) R_z(-θ)``.
    """
    return rotation_about_axis(poses[..., 1], 'y') @ rotation_about_axis(-poses[..., 0], 'z')


def euler_matrix(angles: torch.Tensor) -> torch.Tensor:
    """``R_x(a) R_y(b) R_z(c)`` ``(..., 3, 3)`` of Euler angles ``(..., 3)`` = ``(a, b, c)`` (the original's
    ``euler2mat``)."""
    return (rotation_about_axis(angles[..., 0], 'x') @ rotation_about_axis(angles[..., 1], 'y')
            @ rotation_about_axis(angles[..., 2], 'z'))


def view_matrices() -> torch.Tensor:
    """The 4 published view rotations ``(4, 3, 3)``: Euler ``[kπ/2, 0, π/2]``, k = 0..3 (cameras orbiting the x axis
    of the posed cloud; the image is the view's x-y plane, x → rows, y → columns)."""
    k = torch.arange(NUM_VIEWS, dtype=torch.float64)
    angles = torch.stack([k * math.pi / 2, torch.zeros_like(k), torch.full_like(k, math.pi / 2)], dim=-1)
    return euler_matrix(angles).float()


def published_test_poses() -> torch.Tensor:
    """The 8 published test poses ``(8, 2)`` in radians: θ = linspace(0.1, 2, 9)[:8]·π, φ = -0.35π.

    Effective view elevations at φ = -0.35π: +27°, -63°, -27°, +63° (whatever θ).
    """
    theta = torch.linspace(0.1, 2.0, 9, dtype=torch.float64)[:8]
    return (torch.stack([theta, torch.full_like(theta, TEST_PHI)], dim=-1) * math.pi).float()


def sample_poses(batch: int, theta_range: Sequence[float] = TRAIN_THETA, phi_range: Sequence[float] = TRAIN_PHI,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """Random training poses ``(batch, 2)`` in radians: θ ~ U(theta_range)·π, φ ~ U(phi_range)·π."""
    u = torch.rand(batch, 2, device=device)
    lo = torch.tensor([theta_range[0], phi_range[0]], device=device)
    hi = torch.tensor([theta_range[1], phi_range[1]], device=device)
    return (lo + u * (hi - lo)) * math.pi


def splat_pixels(xy: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel ``(row, col)`` ``(B, N, 2)`` (long) of each point on the published ``size × size`` grid.

    ``cell = max(range_x, range_y) / (S - 3)``, ``i = floor((p - min) / cell)`` per axis (x → rows, y → columns), then
    the object is centred: ``pixel = i + S/2 - floor((max i + min i + 2) / 2)``. The longer axis spans pixels
    1..S-2, so every 3×3 footprint lies on the grid.
    """
    lo = xy.amin(dim=1, keepdim=True)
    cell = (xy.amax(dim=1, keepdim=True) - lo).amax(dim=-1, keepdim=True) / (size - 3)
    idx = torch.floor((xy - lo) / cell.clamp_min(torch.finfo(xy.dtype).tiny))
    idx = idx.clamp(0, size - 3)  # only float rounding could leave [0, S-3]
    centre = torch.floor((idx.amax(dim=1, keepdim=True) + idx.amin(dim=1, keepdim=True) + 2) / 2)
    return (idx + size // 2 - centre).long()


def splat_sum(feats: torch.Tensor, pixels: torch.Tensor, size: int) -> torch.Tensor:
    """Sum of features ``(B, N, C)`` over every point whose 3×3 footprint around ``pixels`` ``(B, N, 2)`` covers a
    pixel: ``(B, C, S, S)``, empty pixels 0.

    Written as a one-pixel ``index_add_`` followed by a 3×3 box sum (zero padding), which is the same sum as adding
    each point into its 9 pixels, with one feature map of memory instead of nine.
    """
    b, n, c = feats.shape
    flat = pixels[..., 0] * size + pixels[..., 1]
    flat = flat + torch.arange(b, device=feats.device).unsqueeze(1) * (size * size)
    grid = feats.new_zeros(b * size * size, c).index_add_(0, flat.reshape(-1), feats.reshape(b * n, c))
    grid = grid.reshape(b, size, size, c).permute(0, 3, 1, 2)
    return F.avg_pool2d(grid, 3, stride=1, padding=1, count_include_pad=True, divisor_override=1)


class EdgePointEncoder(nn.Module):
    """Per-point features ``(B, C, N)`` of ``(B, N, 3)``: Conv1d → k-NN edge conv + GroupNorm + LeakyReLU → max
    over neighbours → Conv1d (published: 3→8, k = 32, 16→64, GroupNorm(4), 64→64)."""

    def __init__(self, in_chans: int = 3, embed_chans: int = 8, out_chans: int = 64, k: int = 32,
                 groups: int = 4) -> None:
        super().__init__()
        self.k = k
        self.embed = nn.Conv1d(in_chans, embed_chans, 1)
        self.edge = nn.Sequential(nn.Conv2d(2 * embed_chans, out_chans, 1, bias=False),
                                  nn.GroupNorm(groups, out_chans), nn.LeakyReLU(0.2))
        self.proj = nn.Conv1d(out_chans, out_chans, 1)

    def forward(self, xyz: torch.Tensor) -> torch.Tensor:
        f = self.embed(xyz.transpose(1, 2))
        f = self.edge(edge_features(f, knn_indices(xyz, self.k))).amax(dim=-1)
        return self.proj(f)


class TokenSelfAttention(nn.Module):
    """Multi-head self-attention ``softmax(q kᵀ / √d) v`` over tokens ``(B, T, D)`` with a head width ``d``
    independent of ``D`` (written here because timm>=1.0.9's ``Attention`` ties ``d`` to ``D / heads``)."""

    def __init__(self, dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class TokenBlock(nn.Module):
    """Pre-norm transformer layer: ``x + attn(LN(x))``, then ``x + mlp(LN(x))`` (GELU MLP)."""

    def __init__(self, dim: int = 128, heads: int = 8, head_dim: int = 128, mlp_hidden: int = 256) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = TokenSelfAttention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MultiViewFusion(nn.Module):
    """Cross-view fusion (published ``MultiViewFusionV2``) of ``(B·V, C, S, S)`` → same shape.

    ``t = conv_p×p/p(x)`` (no bias) → one :class:`TokenBlock` over the ``V·(S/p)²`` tokens of each sample →
    nearest upsample to S → ``u = GELU(conv3×3(t))`` → ``GELU(conv1×1([u, x]))``.
    """

    def __init__(self, chans: int = 64, num_views: int = NUM_VIEWS, dim: int = 128, heads: int = 8,
                 head_dim: int = 128, mlp_hidden: int = 256, patch: int = 7) -> None:
        super().__init__()
        self.num_views = num_views
        self.down = nn.Conv2d(chans, dim, patch, stride=patch, bias=False)
        self.block = TokenBlock(dim, heads, head_dim, mlp_hidden)
        self.up = nn.Sequential(nn.Conv2d(dim, chans, 3, padding=1), nn.GELU())
        self.merge = nn.Sequential(nn.Conv2d(2 * chans, chans, 1), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.down(x)
        bv, d, h, w = t.shape
        v = self.num_views
        tokens = t.reshape(bv // v, v, d, h * w).transpose(2, 3).reshape(bv // v, v * h * w, d)
        tokens = self.block(tokens)
        t = tokens.reshape(bv // v, v, h * w, d).transpose(2, 3).reshape(bv, d, h, w)
        t = self.up(F.interpolate(t, size=x.shape[-2:], mode='nearest'))
        return self.merge(torch.cat([t, x], dim=1))


class P2PProjector(nn.Module):
    """Published learned point-to-pixel projection: ``(canonical, posed)`` clouds ``(B, N, 3)`` → ``(B·4, 3, S, S)``.

    Args:
        image_size: S (224 as published); even and >= 8.
        k: neighbours of the edge features (32).
        embed_chans: width of the pointwise conv (8).
        point_chans: width of the point features and 2D maps (64).
    """

    def __init__(self, image_size: int = 224, k: int = 32, embed_chans: int = 8, point_chans: int = 64) -> None:
        super().__init__()
        if image_size < 8 or image_size % 2:
            raise ValueError(f'p2p image_size must be even and >= 8 (the fusion patch is 7), got {image_size}')
        self.image_size = image_size
        self.num_views = NUM_VIEWS
        self.encoder = EdgePointEncoder(3, embed_chans, point_chans, k)
        self.img_block = nn.Sequential(BasicBlock(point_chans, point_chans), nn.Conv2d(point_chans, point_chans, 1))
        self.fusion = MultiViewFusion(point_chans, NUM_VIEWS)
        self.to_rgb = nn.Conv2d(point_chans, 3, 1)
        self.register_buffer('views', view_matrices(), persistent=False)
        self.register_buffer('mean', torch.tensor(IMAGENET_DEFAULT_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(IMAGENET_DEFAULT_STD).reshape(1, 3, 1, 1), persistent=False)

    def splat(self, feats: torch.Tensor, posed: torch.Tensor) -> torch.Tensor:
        """Feature maps ``(B·V, C, S, S)``: the features ``(B, C, N)`` sum-splatted at each view's projection of
        ``posed`` ``(B, N, 3)`` (view ``k`` is ``p @ E_k.T``, then x, y). Float32 even under autocast: a bf16
        coordinate (8 significant bits) would move points by pixels on a 224 grid."""
        b, c, n = feats.shape
        v, s = self.num_views, self.image_size
        dtype = torch.promote_types(posed.dtype, torch.float32)
        with torch.autocast(posed.device.type, enabled=False):  # pixel positions and sums stay in float32
            xy = torch.einsum('bnj,vij->bvni', posed.to(dtype), self.views.to(dtype))[..., :2].reshape(b * v, n, 2)
            per_view = feats.to(dtype).transpose(1, 2).unsqueeze(1).expand(b, v, n, c).reshape(b * v, n, c)
            return splat_sum(per_view, splat_pixels(xy, s), s)

    def forward(self, canonical: torch.Tensor, posed: torch.Tensor) -> torch.Tensor:
        x = self.splat(self.encoder(canonical), posed)
        x = self.fusion(self.img_block(x))
        img = torch.sigmoid(self.to_rgb(x))
        return (img - self.mean) / self.std

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the BasicBlock's eval-mode BatchNorms into its convolutions (same function)."""
        block = self.img_block[0]
        for conv_name, bn_name in (('conv1', 'bn1'), ('conv2', 'bn2')):
            bn = getattr(block, bn_name)
            if isinstance(bn, nn.Identity):
                continue
            setattr(block, conv_name, fold_bn_into_conv(getattr(block, conv_name), bn))
            setattr(block, bn_name, nn.Identity())
