""" UniRepLKNet

A large-kernel ConvNet for universal perception, written from the published description:

* `UniRepLKNet: A Universal Perception Large-Kernel ConvNet for Audio, Video, Point Cloud, Time-Series and Image
  Recognition` - https://arxiv.org/abs/2311.15599 (CVPR 2024)
* `Scaling Up Your Kernels: Large Kernel Design in ConvNets towards Universal Representations`
  - https://arxiv.org/abs/2410.08049 (TPAMI 2025)

The module layout (and so every state-dict key) matches the public release (AILab-CVC/UniRepLKNet, Apache-2.0), so
its checkpoints load strictly, in training form or in the structurally re-parameterized deploy form.

Layout: a 2-conv stem and three conv downsamplers (``downsample_layers``), four stages of blocks (``stages``),
global average pool -> ``norm`` (LayerNorm) -> ``head``. A training-form block is::

    out = x + drop_path(gamma * BN2(Linear2(GRN(GELU(Linear1(SE(BN1(DW(x)))))))))

where ``DW`` is a Dilated Reparam Block (kernel >= 7) or a plain depthwise conv (kernel 3 / 5).
``reparameterize()`` folds every BatchNorm, the dilated branches, GRN beta and the layer scale away.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import os
import pickle
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from timm.models._manipulate import adapt_input_conv, checkpoint_seq, named_apply

from .reparam import (
    dilate_kernel, fold_bias_through_linear, fuse_conv_bn, fuse_linear_bn, merge_dilated_branches, scale_linear,
)

__all__ = [
    'UniRepLKNet', 'UniRepLKNetBlock', 'DilatedReparamBlock', 'GRN', 'SEBlock', 'checkpoint_filter_fn',
    'load_checkpoint', 'read_checkpoint', 'DRB_BRANCHES', 'DEFAULT_KERNEL_SIZES',
]

_logger = logging.getLogger(__name__)

# Dilated Reparam Block branches per large kernel size K: (branch kernel sizes, dilations).
DRB_BRANCHES: Dict[int, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {
    17: ((5, 9, 3, 3, 3), (1, 2, 4, 5, 7)),
    15: ((5, 7, 3, 3, 3), (1, 2, 3, 5, 7)),
    13: ((5, 7, 3, 3, 3), (1, 2, 3, 4, 5)),
    11: ((5, 5, 3, 3, 3), (1, 2, 3, 4, 5)),
    9: ((5, 5, 3, 3), (1, 2, 3, 4)),
    7: ((5, 3, 3), (1, 2, 3)),
    5: ((3, 3), (1, 2)),
}

# Published per-block kernel sizes, keyed by depths.
DEFAULT_KERNEL_SIZES: Dict[Tuple[int, ...], Tuple[Tuple[int, ...], ...]] = {
    (2, 2, 6, 2): ((3, 3), (13, 13), (13,) * 6, (13, 13)),
    (2, 2, 8, 2): ((3, 3), (13, 13), (13,) * 8, (13, 13)),
    (3, 3, 18, 3): ((3, 3, 3), (13, 13, 13), (13, 3) * 9, (13, 13, 13)),
    (3, 3, 27, 3): ((3, 3, 3), (13, 13, 13), (13, 3, 3) * 9, (13, 13, 13)),
}

_MIN_DRB_KERNEL = 7  # blocks with a smaller kernel use a plain depthwise conv


def get_bn(channels: int, use_sync_bn: bool = False) -> nn.Module:
    """BatchNorm2d, or SyncBatchNorm for multi-GPU training."""
    return nn.SyncBatchNorm(channels) if use_sync_bn else nn.BatchNorm2d(channels)


def _new_conv(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A conv with the geometry of ``like`` holding the given weight and bias."""
    conv = nn.Conv2d(
        like.in_channels, like.out_channels, like.kernel_size, stride=like.stride, padding=like.padding,
        dilation=like.dilation, groups=like.groups, bias=True, device=weight.device, dtype=weight.dtype,
    )
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


class NCHWtoNHWC(nn.Module):
    """Permute ``(B, C, H, W)`` to channels-last ``(B, H, W, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class NHWCtoNCHW(nn.Module):
    """Permute channels-last ``(B, H, W, C)`` to ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


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


class DilatedReparamBlock(nn.Module):
    """A K x K depthwise conv + BN in parallel with dilated small-kernel depthwise convs + BNs.

    Training form: ``lk_origin`` (no bias) -> ``origin_bn``, plus ``dil_conv_k{k}_{r}`` -> ``dil_bn_k{k}_{r}`` for
    each branch in :data:`DRB_BRANCHES`; the output is the sum. Deploy form: ``lk_origin`` only, with bias.

    Args:
        channels: channels (depthwise).
        kernel_size: the large kernel size K (a key of :data:`DRB_BRANCHES`).
        deploy: build the deploy form.
        use_sync_bn: use SyncBatchNorm.
    """

    def __init__(self, channels: int, kernel_size: int, deploy: bool = False, use_sync_bn: bool = False):
        super().__init__()
        if kernel_size not in DRB_BRANCHES:
            raise ValueError(
                f'Dilated Reparam Block kernel size must be one of {sorted(DRB_BRANCHES)}, got {kernel_size}')
        self.channels = channels
        self.kernel_size = kernel_size
        self.lk_origin = nn.Conv2d(
            channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=deploy)
        ks, rs = DRB_BRANCHES[kernel_size]
        self.branches: List[Tuple[int, int]] = list(zip(ks, rs))
        self.deploy = deploy
        if not deploy:
            self.origin_bn = get_bn(channels, use_sync_bn)
            for k, r in self.branches:
                self.add_module(f'dil_conv_k{k}_{r}', nn.Conv2d(
                    channels, channels, k, padding=(r * (k - 1) + 1) // 2, dilation=r, groups=channels, bias=False))
                self.add_module(f'dil_bn_k{k}_{r}', get_bn(channels, use_sync_bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return self.lk_origin(x)
        out = self.origin_bn(self.lk_origin(x))
        for k, r in self.branches:
            conv = getattr(self, f'dil_conv_k{k}_{r}')
            bn = getattr(self, f'dil_bn_k{k}_{r}')
            out = out + bn(conv(x))
        return out

    def _branches_dense(self, x: torch.Tensor) -> torch.Tensor:
        """Training-form forward with each dilated branch run as the equivalent dense conv (zeros inserted in its
        kernel): the same function and gradients, but oneDNN's dilated depthwise kernels (backward especially)
        are several times slower on CPU than a dense one of the expanded size. Small maps run every branch as
        one matmul against a Toeplitz matrix of the kernel (see :func:`_depthwise_as_matmul`)."""
        kernels = [self.lk_origin.weight] + [
            dilate_kernel(getattr(self, f'dil_conv_k{k}_{r}').weight, r) for k, r in self.branches]
        bns = [self.origin_bn] + [getattr(self, f'dil_bn_k{k}_{r}') for k, r in self.branches]
        if _small_map_matmul(x):
            ys = _depthwise_as_matmul(x, kernels)
        else:
            ys = [F.conv2d(x, k, None, 1, k.shape[-1] // 2, 1, self.channels) for k in kernels]
        out = bns[0](ys[0])
        for bn, y in zip(bns[1:], ys[1:]):
            out = out + bn(y)
        return out

    def _merged_kernel(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The single ``K x K`` kernel and bias equal to the training-form block with eval BatchNorms
        (differentiable: the fast path uses it for frozen-BN training and evaluation)."""
        kernel, bias = fuse_conv_bn(self.lk_origin.weight, self.origin_bn, self.lk_origin.bias)
        branches = []
        for k, r in self.branches:
            b_kernel, b_bias = fuse_conv_bn(
                getattr(self, f'dil_conv_k{k}_{r}').weight, getattr(self, f'dil_bn_k{k}_{r}'))
            branches.append((b_kernel, b_bias, r))
        return merge_dilated_branches(kernel, bias, branches)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Merge every branch and BN into one biased ``lk_origin`` conv (in place, idempotent)."""
        if self.deploy:
            return
        kernel, bias = self._merged_kernel()
        self.lk_origin = _new_conv(self.lk_origin, kernel, bias)
        del self.origin_bn
        for k, r in self.branches:
            delattr(self, f'dil_conv_k{k}_{r}')
            delattr(self, f'dil_bn_k{k}_{r}')
        self.deploy = True


# Inference runs the FFN in batch chunks whose 4C-wide hidden tensor stays under this size: it stays in cache and
# under glibc's mmap threshold (fresh mmap'd pages cost a page fault each, measured ~30% of the FFN at stage 0).
_FFN_CHUNK_BYTES = 4 << 20
# Inference runs the stem in batch chunks whose first (half-resolution) map stays under this size, so its
# LayerNorm and GELU passes read from cache instead of DRAM (the largest tensors of the network).
_STEM_CHUNK_BYTES = 4 << 20
# Maps with at least this many pixels run the FFN Linears as oneDNN 1x1 convs (faster there on CPU), smaller ones
# as matmuls.
_CONV1X1_MIN_HW = 128


_HAS_ONEDNN_OPS = hasattr(torch.ops.mkldnn, '_convolution_pointwise') and hasattr(
    torch.ops.mkldnn, '_convolution_pointwise_')


def _use_onednn(x: torch.Tensor) -> bool:
    """oneDNN's fused conv ops (GELU / residual-sum post-ops) apply: fp32 CPU tensors, oneDNN enabled."""
    return _HAS_ONEDNN_OPS and x.device.type == 'cpu' and x.dtype == torch.float32 \
        and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


# Training on maps with at most this many pixels runs the depthwise convs as Toeplitz matmuls.
_DW_MATMUL_MAX_HW = 100


def _small_map_matmul(x: torch.Tensor) -> bool:
    return x.device.type == 'cpu' and x.shape[-1] * x.shape[-2] <= _DW_MATMUL_MAX_HW and torch.is_grad_enabled() \
        and not _tracing()


@functools.lru_cache(maxsize=64)
def _toeplitz_index(height: int, width: int, k: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """For a ``k x k`` 'same' conv on an ``H x W`` map: the kernel tap linking each (output, input) pixel pair
    (``(HW, HW)`` indices into the flattened kernel) and whether that pair is linked at all."""
    ii, jj = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing='ij')
    ii, jj = ii.reshape(-1), jj.reshape(-1)
    dy = ii[None, :] - ii[:, None] + k // 2  # [out, in]
    dx = jj[None, :] - jj[:, None] + k // 2
    valid = (dy >= 0) & (dy < k) & (dx >= 0) & (dx < k)
    return (dy.clamp(0, k - 1) * k + dx.clamp(0, k - 1)), valid


def _depthwise_as_matmul(x: torch.Tensor, kernels: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Depthwise 'same' convs (stride 1, no bias) of ``x`` with each ``(C, 1, k, k)`` kernel, as one batched
    matmul per kernel against its ``(C, HW, HW)`` Toeplitz matrix.

    Exact (the Toeplitz entries are the kernel taps or zeros). On small maps a large kernel mostly overlaps the
    zero padding, so this does fewer multiply-adds than the conv, and its backward is two more matmuls instead
    of oneDNN's slow depthwise backward.
    """
    b, c, height, width = x.shape
    length = height * width
    xm = x.permute(1, 0, 2, 3).reshape(c, b, length)  # (C, B, HW)
    outs = []
    for kernel in kernels:
        k = kernel.shape[-1]
        idx, valid = _toeplitz_index(height, width, k, x.device)
        toeplitz = kernel.reshape(c, k * k)[:, idx] * valid.to(kernel.dtype)  # (C, HW_out, HW_in)
        y = torch.bmm(xm, toeplitz.transpose(1, 2))  # (C, B, HW_out)
        outs.append(y.reshape(c, b, height, width).permute(1, 0, 2, 3).contiguous(
            memory_format=torch.channels_last))
    return outs


def _frozen(bn: nn.Module) -> bool:
    """True when a BatchNorm normalizes with its running statistics (so it can be folded)."""
    return isinstance(bn, _BatchNorm) and not bn.training and bn.running_mean is not None \
        and bn.running_var is not None


def _tracing() -> bool:
    """Compiling / exporting: use one whole-batch graph (no Python batch loop, no ``out=``)."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


def _batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor, weight: Optional[torch.Tensor],
                bias: Optional[torch.Tensor]) -> torch.Tensor:
    """``bn(x)`` with another affine (``weight``, ``bias``), same running-statistics update as ``bn.forward``."""
    eaf = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        eaf = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    use_batch = bn.training or (bn.running_mean is None and bn.running_var is None)
    track = not bn.training or bn.track_running_stats
    return F.batch_norm(
        x, bn.running_mean if track else None, bn.running_var if track else None, weight, bias,
        use_batch, eaf, bn.eps)


def _se_scale(se: 'SEBlock', y: torch.Tensor) -> torch.Tensor:
    """The SE block's per-sample channel scale ``(B, C)`` (the multiply is folded into Linear1)."""
    s = y.mean((2, 3))
    s = F.relu(F.linear(s, se.down.weight.flatten(1), se.down.bias))
    return torch.sigmoid(F.linear(s, se.up.weight.flatten(1), se.up.bias))


class UniRepLKNetBlock(nn.Module):
    """One UniRepLKNet block.

    Args:
        dim: channels.
        kernel_size: depthwise kernel size: >= 7 a Dilated Reparam Block, 1/3/5 a plain depthwise conv, 0 none.
        drop_path: stochastic depth rate.
        layer_scale_init_value: initial layer scale ``gamma``; ``None`` or <= 0 disables it.
        deploy: build the deploy (re-parameterized) form.
        use_sync_bn: use SyncBatchNorm.
        ffn_factor: FFN expansion.
    """

    def __init__(
            self,
            dim: int,
            kernel_size: int,
            drop_path: float = 0.,
            layer_scale_init_value: Optional[float] = 1e-6,
            deploy: bool = False,
            use_sync_bn: bool = False,
            ffn_factor: int = 4,
    ):
        super().__init__()
        self.dim = dim
        self.kernel_size = kernel_size
        self.deploy = deploy
        if kernel_size == 0:
            self.dwconv = nn.Identity()
            self.norm = nn.Identity()
        elif kernel_size >= _MIN_DRB_KERNEL:
            self.dwconv = DilatedReparamBlock(dim, kernel_size, deploy=deploy, use_sync_bn=use_sync_bn)
            self.norm = nn.Identity() if deploy else get_bn(dim, use_sync_bn)
        elif kernel_size % 2 == 1:
            self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=deploy)
            self.norm = nn.Identity() if deploy else get_bn(dim, use_sync_bn)
        else:
            raise ValueError(f'block kernel size must be 0 or odd, got {kernel_size}')
        self.se = SEBlock(dim, dim // 4)
        ffn_dim = int(ffn_factor * dim)
        self.pwconv1 = nn.Sequential(NCHWtoNHWC(), nn.Linear(dim, ffn_dim))
        self.act = nn.Sequential(nn.GELU(), GRN(ffn_dim, use_bias=not deploy))
        if deploy:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim), NHWCtoNCHW())
        else:
            self.pwconv2 = nn.Sequential(nn.Linear(ffn_dim, dim, bias=False), NHWCtoNCHW(), get_bn(dim, use_sync_bn))
        use_ls = (not deploy) and layer_scale_init_value is not None and layer_scale_init_value > 0
        self.gamma = nn.Parameter(layer_scale_init_value * torch.ones(dim)) if use_ls else None
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
        # not part of the state: the plain math stays available as _reference_forward (see set_fast_path)
        self.fast_path = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path:
            return self._fast_forward(x)
        return self._reference_forward(x)

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The plain module-by-module math (the published layout); the fast path is tested against it."""
        y = self.se(self.norm(self.dwconv(x)))
        y = self.pwconv2(self.act(self.pwconv1(y)))
        if self.gamma is not None:
            y = y * self.gamma.reshape(1, -1, 1, 1)
        return x + self.drop_path(y)

    # ----- fast path: same function, fewer passes over memory (see benchmarks/README.md) -----

    def _fast_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block in channels-last memory throughout (no permute copies), with BatchNorms folded on the fly
        where they are frozen, SE and GRN scales folded into the FFN, and, in inference, the FFN run in batch
        chunks so its 4x-wide hidden tensor stays cache- and allocator-friendly."""
        x = x.contiguous(memory_format=torch.channels_last)
        y = self._fast_dw(x)
        s = _se_scale(self.se, y)
        bn2 = None if self.deploy else self.pwconv2[2]
        fold_bn2 = bn2 is None or _frozen(bn2)
        w2, b2 = self._fast_linear2_params(fold_bn2)
        grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        b, c, h, w = x.shape
        if not grad and fold_bn2 and not _tracing() and (not self.training or isinstance(self.drop_path, nn.Identity)):
            # inference: in-place ops, batch chunks accumulated straight into the output (chunks keep the hidden
            # tensor in a CPU's caches; on a GPU they would only add launches)
            step = max(1, _FFN_CHUNK_BYTES // (h * w * self.pwconv1[1].out_features * x.element_size())) \
                if x.device.type == 'cpu' else b
            if _use_onednn(x) and h * w >= _CONV1X1_MIN_HW:
                out = x.clone(memory_format=torch.channels_last)
                for i in range(0, b, step):
                    self._onednn_ffn_(out[i:i + step], y[i:i + step], s[i:i + step], w2, b2)
                return out
            out = torch.empty_like(x, memory_format=torch.channels_last)
            for i in range(0, b, step):
                z = self._fast_ffn(y[i:i + step], s[i:i + step], w2, b2, inplace=True)
                torch.add(x[i:i + step], z, out=out[i:i + step])
            return out
        z = self._fast_ffn(y, s, w2, b2, inplace=not grad)
        if not fold_bn2:  # BN2 with batch statistics; layer scale folded into its affine
            g = self.gamma
            if type(bn2) is nn.BatchNorm2d and (g is None or (bn2.weight is not None and bn2.bias is not None)):
                weight = bn2.weight if g is None else bn2.weight * g
                bias = bn2.bias if g is None else bn2.bias * g
                z = _batch_norm(bn2, z, weight, bias)
            else:
                z = bn2(z)
                if g is not None:
                    z = z * g.reshape(1, -1, 1, 1)
        return x + self.drop_path(z)

    def _fast_dw(self, x: torch.Tensor) -> torch.Tensor:
        """Depthwise conv + BN1, as one conv when every BatchNorm involved is frozen (eval statistics)."""
        dw, norm = self.dwconv, self.norm
        if isinstance(dw, nn.Identity):
            return norm(x)
        if isinstance(dw, DilatedReparamBlock):
            if dw.deploy:
                conv = dw.lk_origin
                weight, bias = conv.weight, conv.bias
            elif _frozen(dw.origin_bn) and all(_frozen(getattr(dw, f'dil_bn_k{k}_{r}')) for k, r in dw.branches):
                conv = dw.lk_origin
                weight, bias = dw._merged_kernel()
            else:  # batch statistics in every branch: run the branches
                return norm(dw._branches_dense(x))
        else:
            conv = dw
            weight, bias = conv.weight, conv.bias
        if isinstance(norm, _BatchNorm):
            if not _frozen(norm):
                return norm(F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))
            weight, bias = fuse_conv_bn(weight, norm, bias)
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)

    def _fast_linear2_params(self, fold_bn2: bool) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Weight and bias of Linear2 with GRN beta folded in (and BN2 + layer scale when BN2 is frozen)."""
        linear, grn = self.pwconv2[0], self.act[1]
        weight, bias = linear.weight, linear.bias
        if grn.beta is not None:
            bias = fold_bias_through_linear(weight, bias, grn.beta)
        if fold_bn2 and not self.deploy:
            weight, bias = fuse_linear_bn(weight, bias, self.pwconv2[2])
            if self.gamma is not None:
                weight, bias = scale_linear(weight, bias, self.gamma)
        return weight, bias

    def _onednn_ffn_(
            self,
            out: torch.Tensor,
            y: torch.Tensor,
            s: torch.Tensor,
            w2: torch.Tensor,
            b2: Optional[torch.Tensor],
    ) -> None:
        """Inference FFN as two oneDNN 1x1 convs with fused GELU (erf) and fused residual sum into ``out``."""
        linear1, grn = self.pwconv1[1], self.act[1]
        hid = torch.ops.mkldnn._convolution_pointwise(
            y * s[:, :, None, None], linear1.weight[:, :, None, None], linear1.bias,
            [0, 0], [1, 1], [1, 1], 1, 'gelu', [], 'none')
        gx = hid.square().sum((2, 3)).sqrt()
        scale = grn.gamma.reshape(1, -1) * (gx / (gx.mean(-1, keepdim=True) + 1e-6)) + 1
        hid.mul_(scale[:, :, None, None])
        torch.ops.mkldnn._convolution_pointwise_.binary(
            out, hid, w2[:, :, None, None], b2, [0, 0], [1, 1], [1, 1], 1, 'add', 1.0, None, [], None)

    def _fast_ffn(
            self,
            y: torch.Tensor,
            s: torch.Tensor,
            w2: torch.Tensor,
            b2: Optional[torch.Tensor],
            inplace: bool,
    ) -> torch.Tensor:
        """``Linear2(GRN(GELU(Linear1(y * s))))`` on a channels-last ``(n, C, H, W)`` map, returned channels-last.

        Large maps run both Linears as oneDNN 1x1 convolutions (measured up to 2.5x faster than the BLAS matmul
        for the narrow stage-0 shapes) with the per-sample scales (SE, GRN's ``gamma * Nx + 1``) applied to the
        activations. Small maps use matmuls on a ``(n, H*W, C)`` view and fold each per-sample scale into
        per-sample weights when those are smaller than the activations.
        """
        linear1, gelu, grn = self.pwconv1[1], self.act[0], self.act[1]
        n, c, height, width = y.shape
        length = height * width
        hidden = linear1.out_features
        conv = length >= _CONV1X1_MIN_HW
        if conv:
            hid = F.conv2d(y * s[:, :, None, None], linear1.weight[:, :, None, None], linear1.bias)
        else:
            yl = y.permute(0, 2, 3, 1).reshape(n, length, c)  # a view of channels-last memory
            if hidden < length:  # scale the (n, C, 4C) weights rather than the (n, L, C) rows
                w1 = linear1.weight.t().unsqueeze(0) * s.unsqueeze(2)
                hid = torch.bmm(yl, w1) if linear1.bias is None else torch.baddbmm(linear1.bias, yl, w1)
            else:
                hid = F.linear(yl * s.unsqueeze(1), linear1.weight, linear1.bias)
        if inplace and gelu.approximate == 'none':
            hid = torch.ops.aten.gelu_(hid)
        else:
            hid = F.gelu(hid, approximate=gelu.approximate)
        # GRN: per-channel spatial L2 norm as sqrt(sum of squares) (torch.norm over dims is ~3x slower here)
        # clamped so an all-zero channel (possible after GELU) gets gradient 0 like torch.norm, not inf * 0 = NaN
        ss = hid.square().sum((2, 3) if conv else 1)
        gx = ss.clamp_min(torch.finfo(ss.dtype).tiny).sqrt()
        scale = grn.gamma.reshape(1, -1) * (gx / (gx.mean(-1, keepdim=True) + 1e-6)) + 1  # (n, 4C)
        if conv:
            scale = scale[:, :, None, None]
            hid = hid.mul_(scale) if inplace else hid * scale
            return F.conv2d(hid, w2[:, :, None, None], b2)
        if c < length:  # fold the scale into per-sample (n, C, 4C) weights
            w2s = (w2.unsqueeze(0) * scale.unsqueeze(1)).transpose(1, 2)
            z = torch.bmm(hid, w2s) if b2 is None else torch.baddbmm(b2, hid, w2s)
        else:
            hid = hid.mul_(scale.unsqueeze(1)) if inplace else hid * scale.unsqueeze(1)
            z = F.linear(hid, w2, b2)
        return z.reshape(n, height, width, c).permute(0, 3, 1, 2)

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Convert this block in place to the deploy form (same function in eval mode; idempotent)."""
        if self.deploy:
            return
        # 1-2. merge the dilated branches, then fold BN1 into the depthwise conv
        if isinstance(self.dwconv, DilatedReparamBlock):
            self.dwconv.reparameterize()
            conv = self.dwconv.lk_origin
        elif isinstance(self.dwconv, nn.Conv2d):
            conv = self.dwconv
        else:
            conv = None
        if conv is not None and isinstance(self.norm, _BatchNorm):
            kernel, bias = fuse_conv_bn(conv.weight, self.norm, conv.bias)
            new_conv = _new_conv(conv, kernel, bias)
            if isinstance(self.dwconv, DilatedReparamBlock):
                self.dwconv.lk_origin = new_conv
            else:
                self.dwconv = new_conv
            self.norm = nn.Identity()
        # 3. GRN beta through Linear2; 4. BN2 and layer scale into Linear2
        grn = self.act[1]
        linear = self.pwconv2[0]
        bias = linear.bias
        if grn.beta is not None:
            bias = fold_bias_through_linear(linear.weight, bias, grn.beta)
        weight, bias = fuse_linear_bn(linear.weight, bias, self.pwconv2[2])
        if self.gamma is not None:
            weight, bias = scale_linear(weight, bias, self.gamma)
        new_linear = nn.Linear(
            linear.in_features, linear.out_features, bias=True, device=weight.device, dtype=weight.dtype)
        new_linear.weight.copy_(weight)
        new_linear.bias.copy_(bias)
        grn.beta = None
        self.pwconv2 = nn.Sequential(new_linear, NHWCtoNCHW())
        self.gamma = None
        self.deploy = True


def _resolve_kernel_sizes(
        depths: Sequence[int],
        kernel_sizes: Optional[Sequence[Union[int, Sequence[int]]]],
) -> Tuple[Tuple[int, ...], ...]:
    """Per-block kernel sizes: the published default for the depths, or validated explicit ones."""
    if kernel_sizes is None:
        if tuple(depths) not in DEFAULT_KERNEL_SIZES:
            raise ValueError(
                f'no published kernel sizes for depths {tuple(depths)}; pass kernel_sizes explicitly '
                f'(one sequence per stage, one entry per block)')
        return DEFAULT_KERNEL_SIZES[tuple(depths)]
    if len(kernel_sizes) != len(depths):
        raise ValueError(f'kernel_sizes needs one entry per stage ({len(depths)}), got {len(kernel_sizes)}')
    out = []
    for i, (d, ks) in enumerate(zip(depths, kernel_sizes)):
        ks = (int(ks),) * d if isinstance(ks, int) else tuple(int(k) for k in ks)
        if len(ks) != d:
            raise ValueError(f'stage {i}: {d} blocks but {len(ks)} kernel sizes ({ks})')
        out.append(ks)
    return tuple(out)


class UniRepLKNet(nn.Module):
    """UniRepLKNet trunk.

    Args:
        in_chans: input channels.
        num_classes: classifier size; 0 leaves ``head`` an Identity (``norm`` stays).
        depths: blocks per stage.
        dims: channels per stage.
        kernel_sizes: per-block kernel sizes (one sequence per stage, or one int per stage); ``None`` uses the
            published sizes for the depths.
        drop_rate: dropout before the classifier.
        drop_path_rate: stochastic depth, linearly increasing over all blocks.
        layer_scale_init_value: initial layer scale (``None``/0 disables it).
        head_init_scale: scale of the initial classifier weights.
        global_pool: ``'avg'``, ``'max'`` or ``'avgmax'``.
        deploy: build the re-parameterized (inference) form directly.
        use_sync_bn: SyncBatchNorm instead of BatchNorm2d.
        dense_norms: add ``norm0`` .. ``norm3`` (channels LayerNorms applied to the stage outputs returned by
            ``forward_intermediates`` / ``features_only``), the layout of the dense-task checkpoints.
        device: device to build on (e.g. ``'meta'``).
        dtype: parameter dtype.
    """

    def __init__(
            self,
            in_chans: int = 3,
            num_classes: int = 1000,
            depths: Sequence[int] = (3, 3, 27, 3),
            dims: Sequence[int] = (96, 192, 384, 768),
            kernel_sizes: Optional[Sequence[Union[int, Sequence[int]]]] = None,
            drop_rate: float = 0.,
            drop_path_rate: float = 0.,
            layer_scale_init_value: Optional[float] = 1e-6,
            head_init_scale: float = 1.,
            global_pool: str = 'avg',
            deploy: bool = False,
            use_sync_bn: bool = False,
            dense_norms: bool = False,
            device: Optional[Union[str, torch.device]] = None,
            dtype: Optional[torch.dtype] = None,
            **kwargs: Any,
    ):
        super().__init__()
        if kwargs:
            hints = []
            for k in sorted(kwargs):
                close = difflib.get_close_matches(k, _INIT_ARGS, n=1)
                hints.append(f'{k!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
            raise TypeError(f'UniRepLKNet got unexpected keyword argument(s): {", ".join(hints)}')
        depths = tuple(int(d) for d in depths)
        dims = tuple(int(d) for d in dims)
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f'depths and dims need 4 entries, got {depths} and {dims}')
        if global_pool not in _POOLS:
            raise ValueError(f'global_pool must be one of {_POOLS}, got {global_pool!r}')
        kernel_sizes = _resolve_kernel_sizes(depths, kernel_sizes)

        self.num_classes = num_classes
        self.in_chans = in_chans
        self.dims = dims
        self.depths = depths
        self.kernel_sizes = kernel_sizes
        self.drop_rate = drop_rate
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False
        self.fast_path = True
        # what a fresh copy of this architecture needs (checkpoint conversion builds a training-form twin)
        self._arch_args = dict(
            in_chans=in_chans, num_classes=num_classes, depths=depths, dims=dims, kernel_sizes=kernel_sizes,
            layer_scale_init_value=layer_scale_init_value, global_pool=global_pool, use_sync_bn=use_sync_bn,
            dense_norms=dense_norms,
        )

        ctx = torch.device(device) if device is not None else contextlib.nullcontext()
        with ctx:
            self.downsample_layers = nn.ModuleList()
            self.downsample_layers.append(nn.Sequential(
                nn.Conv2d(in_chans, dims[0] // 2, kernel_size=3, stride=2, padding=1),
                LayerNorm2d(dims[0] // 2, eps=1e-6),
                nn.GELU(),
                nn.Conv2d(dims[0] // 2, dims[0], kernel_size=3, stride=2, padding=1),
                LayerNorm2d(dims[0], eps=1e-6),
            ))
            for i in range(3):
                self.downsample_layers.append(nn.Sequential(
                    nn.Conv2d(dims[i], dims[i + 1], kernel_size=3, stride=2, padding=1),
                    LayerNorm2d(dims[i + 1], eps=1e-6),
                ))

            dp_rates = torch.linspace(0, drop_path_rate, sum(depths), device='cpu').tolist()
            self.stages = nn.ModuleList()
            self.feature_info = []
            cur = 0
            for i in range(4):
                self.stages.append(nn.Sequential(*[
                    UniRepLKNetBlock(
                        dims[i], kernel_sizes[i][j], drop_path=dp_rates[cur + j],
                        layer_scale_init_value=layer_scale_init_value, deploy=deploy, use_sync_bn=use_sync_bn)
                    for j in range(depths[i])
                ]))
                cur += depths[i]
                self.feature_info.append(dict(num_chs=dims[i], reduction=4 * 2 ** i, module=f'stages.{i}'))

            self.dense_norms = dense_norms
            if dense_norms:
                for i in range(4):
                    self.add_module(f'norm{i}', LayerNorm2d(dims[i], eps=1e-6))

            self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
            self.head_drop = nn.Dropout(drop_rate)
            self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()

            if torch.device(device or 'cpu').type != 'meta':  # nothing to initialise on meta
                named_apply(lambda module, name='': _init_weights(module, name, head_init_scale), self)
        if dtype is not None:
            self.to(dtype=dtype)

    @property
    def deploy(self) -> bool:
        """True when every block is in the re-parameterized form."""
        return all(b.deploy for s in self.stages for b in s)

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Regexes grouping parameters (stem, blocks, final norms) for layer-wise LR decay etc."""
        return dict(
            stem=r'^downsample_layers\.0\.',
            blocks=r'^(?:downsample_layers|stages)\.(\d+)' if coarse else [
                (r'^downsample_layers\.(\d+)', (0,)),
                (r'^stages\.(\d+)\.(\d+)', None),
                (r'^norm\d?\.', (99999,)),
            ],
        )

    # Layer-wise lr decay groups of the published fine-tuning code (ConvNeXt's get_num_layer_for_convnext):
    # stem 0, stage 0 -> 1, stage 1 (+ its downsampler) -> 2, stage 2 in threes from 3, stage 3 -> 12, rest -> 13.
    LAYER_DECAY_LAYERS = 12

    @torch.jit.ignore
    def layer_id(self, name: str) -> int:
        """Layer of parameter ``name`` (a key of ``named_parameters``) for layer-wise lr decay, ``0`` (stem) to
        ``LAYER_DECAY_LAYERS + 1`` (final norms and head, full lr), grouped as in the published code."""
        top = self.LAYER_DECAY_LAYERS
        parts = name.split('.')
        if parts[0] == 'downsample_layers':
            stage = int(parts[1])
            return {0: 0, 1: 2, 2: 3}.get(stage, top)
        if parts[0] == 'stages':
            stage, block = int(parts[1]), int(parts[2])
            if stage < 2:
                return stage + 1
            return min(3 + block // 3, top - 1) if stage == 2 else top
        return top + 1

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        """GRN gamma/beta (4-D shaped, so not caught by timm's ndim <= 1 rule) and layer scales."""
        return {n for n, _ in self.named_parameters() if n.endswith(('act.1.gamma', 'act.1.beta', '.gamma'))}

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Enable or disable activation checkpointing of the blocks."""
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        """The classifier module."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier (``num_classes=0``: Identity; ``norm`` is kept)."""
        if global_pool is not None:
            if global_pool not in _POOLS:
                raise ValueError(f'global_pool must be one of {_POOLS}, got {global_pool!r}')
            self.global_pool = global_pool
        self.num_classes = num_classes
        self._arch_args['num_classes'] = num_classes
        ref = next(self.parameters())
        if num_classes > 0:
            self.head = nn.Linear(self.num_features, num_classes, device=ref.device, dtype=ref.dtype)
            _init_weights(self.head, 'head')
        else:
            self.head = nn.Identity()

    def set_fast_path(self, enable: bool = True) -> None:
        """Use the fast implementation (default) or the plain module-by-module reference math.

        Both compute the same function (tests hold them within fp32 rounding, outputs and gradients). The fast path
        runs the trunk in channels-last memory and returns contiguous NCHW maps like the reference.
        """
        self.fast_path = enable
        for stage in self.stages:
            for block in stage:
                block.fast_path = enable

    def reparameterize(self) -> None:
        """Convert the whole model in place to the deploy form (identical function in eval mode)."""
        for stage in self.stages:
            for block in stage:
                block.reparameterize()

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.global_pool == 'avg':
            return x.mean((2, 3))
        if self.global_pool == 'max':
            return x.amax((2, 3))
        return 0.5 * (x.mean((2, 3)) + x.amax((2, 3)))  # avgmax

    def _stage(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.fast_path:  # channels-last throughout: oneDNN's depthwise conv is far faster on it on CPU
            x = x.contiguous(memory_format=torch.channels_last)
        if i == 0 and self.fast_path and self._chunked_stem_applies(x):
            x = self._chunked_stem(x)
        else:
            x = self.downsample_layers[i](x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages[i], x)
        return self.stages[i](x)

    def _chunked_stem_applies(self, x: torch.Tensor) -> bool:
        """CPU inference with the published stem layout and no hooks on it. Its layers must be per-sample (a
        swapped-in BatchNorm would see chunk statistics) and hooks would miss the Sequential's call or see a
        tensor that the in-place GELU then overwrites."""
        stem = self.downsample_layers[0]
        if torch.is_grad_enabled() or _tracing() or x.device.type != 'cpu' or x.shape[0] < 2:  # 1 image: no gain
            return False
        if type(stem) is not nn.Sequential \
                or [type(m) for m in stem] != [nn.Conv2d, LayerNorm2d, nn.GELU, nn.Conv2d, LayerNorm2d]:
            return False
        hooks = torch.nn.modules.module
        return not (hooks._global_forward_hooks or hooks._global_forward_pre_hooks
                    or any(m._forward_hooks or m._forward_pre_hooks for m in stem.modules()))

    def _chunked_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stem in batch chunks with GELU in place: its 112x112 maps are the largest tensors in the network
        and, whole-batch, each pass over them (LayerNorm, GELU) ran from DRAM into freshly faulted-in pages;
        in chunks they stay in cache (measured 1.8x on the stem of P, batch 16)."""
        conv1, norm1, act, conv2, norm2 = self.downsample_layers[0]
        b, _, height, width = x.shape
        sample_bytes = conv1.out_channels * ((height + 1) // 2) * ((width + 1) // 2) * x.element_size()
        step = max(1, _STEM_CHUNK_BYTES // sample_bytes)
        out = None
        for i in range(0, b, step):
            h = norm1(conv1(x[i:i + step]))
            h = norm2(conv2(torch.ops.aten.gelu_(h, approximate=act.approximate)))
            if step >= b:
                return h
            if out is None:
                out = torch.empty((b,) + h.shape[1:], dtype=h.dtype, device=h.device,
                                  memory_format=torch.channels_last)
            out[i:i + step] = h
        return out

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Forward returning stage outputs (strides 4, 8, 16, 32).

        Args:
            x: input ``(B, C, H, W)``.
            indices: last n stages if int, all if None, else the stage indices to return.
            norm: without ``dense_norms``, apply the final ``norm`` (channel-wise) to the last stage's map.
            stop_early: stop after the last requested stage.
            output_fmt: only ``'NCHW'``.
            intermediates_only: return only the list of maps.

        Returns:
            The maps (each through ``norm{i}`` when the model has ``dense_norms``), or ``(final map, maps)``.
        """
        if output_fmt != 'NCHW':
            raise ValueError('output_fmt must be NCHW')
        n = len(self.stages)
        take_indices, max_index = feature_take_indices(n, indices)
        last = max_index if stop_early else n - 1
        intermediates = []
        for i in range(last + 1):
            x = self._stage(i, x)
            if i in take_indices:
                if self.dense_norms:
                    intermediates.append(getattr(self, f'norm{i}')(x).contiguous())
                elif norm and i == n - 1 and isinstance(self.norm, nn.LayerNorm):
                    intermediates.append(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous())
                else:
                    intermediates.append(x.contiguous())
        if intermediates_only:
            return intermediates
        return x.contiguous(), intermediates

    def prune_intermediate_layers(
            self,
            indices: Union[int, List[int]] = 1,
            prune_norm: bool = False,
            prune_head: bool = True,
    ) -> List[int]:
        """Drop stages (and norm/head) not needed for the requested intermediates."""
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[:max_index + 1]
        self.downsample_layers = self.downsample_layers[:max_index + 1]
        if self.dense_norms:
            for i in range(max_index + 1, 4):
                if hasattr(self, f'norm{i}'):
                    delattr(self, f'norm{i}')
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.head_hidden_size = self.dims[max_index]
        if prune_head or prune_end:
            self.reset_classifier(0)
        return take_indices

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Un-pooled last-stage map ``(B, C3, H/32, W/32)``."""
        for i in range(len(self.stages)):
            x = self._stage(i, x)
        return x.contiguous()

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool -> ``norm`` -> (unless ``pre_logits``) dropout -> ``head``."""
        x = self.norm(self._pool(x))
        if pre_logits:
            return x
        return self.head(self.head_drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


_POOLS = ('avg', 'max', 'avgmax')
_INIT_ARGS = (
    'in_chans', 'num_classes', 'depths', 'dims', 'kernel_sizes', 'drop_rate', 'drop_path_rate',
    'layer_scale_init_value', 'head_init_scale', 'global_pool', 'deploy', 'use_sync_bn', 'dense_norms',
    'device', 'dtype',
)


def _init_weights(module: nn.Module, name: str = '', head_init_scale: float = 1.) -> None:
    """Truncated normal (std .02) Conv2d/Linear weights, zero biases; the classifier scaled by head_init_scale."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        trunc_normal_(module.weight, std=.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
        if name == 'head' and head_init_scale != 1.:
            with torch.no_grad():
                module.weight.mul_(head_init_scale)
                module.bias.mul_(head_init_scale)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------

_WRAPPER_KEYS = ('state_dict', 'model', 'module')
_EMA_KEYS = ('model_ema', 'state_dict_ema')
_STRIP_PREFIXES = ('module.', '_orig_mod.')
_HEAD_KEYS = re.compile(r'^(head|norm\d?)\.')
_DEPLOY_KEY = re.compile(r'^stages\.\d+\.\d+\.pwconv2\.0\.bias$')
_TRAIN_KEY = re.compile(r'^stages\.\d+\.\d+\.(pwconv2\.2\.|gamma$|act\.1\.beta$)')
_STEM_KEY = 'downsample_layers.0.0.weight'


def _unwrap_state_dict(obj: Any, use_ema: bool = False) -> Dict[str, Any]:
    """Descend through ``model`` / ``state_dict`` / ``module`` (or EMA) wrappers to the flat state dict."""
    while isinstance(obj, Mapping):
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        key = None
        if use_ema:
            key = next((k for k in _EMA_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            key = next((k for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            key = next((k for k in _EMA_KEYS if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            break
        obj = obj[key]
    if not isinstance(obj, Mapping):
        raise TypeError(f'checkpoint is not a state dict (got {type(obj).__name__})')
    return dict(obj)


def _clean_state_dict(state_dict: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    """Strip ``module.``-style prefixes (and a detection ``backbone.`` prefix); check every value is a tensor."""
    out = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in _STRIP_PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    if not any(k.startswith('downsample_layers.') for k in out) and any(
            k.startswith('backbone.downsample_layers.') for k in out):
        out = {k[len('backbone.'):]: v for k, v in out.items() if k.startswith('backbone.')}
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise TypeError(f'state dict entries are not tensors: {bad[:5]}{" ..." if len(bad) > 5 else ""}')
    return out


def _state_dict_form(state_dict: Mapping[str, torch.Tensor]) -> Optional[str]:
    """``'deploy'``, ``'train'``, or ``None`` when it cannot tell (no blocks)."""
    if any(_TRAIN_KEY.match(k) for k in state_dict):
        return 'train'
    if any(_DEPLOY_KEY.match(k) for k in state_dict):
        return 'deploy'
    return None


def _adapt_state_dict(
        state_dict: Mapping[str, torch.Tensor],
        model: UniRepLKNet,
        adapt_in_chans: bool = True,
        strict: bool = True,
) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """Bring a released-layout state dict to ``model``'s exact key set.

    Handles the older deploy layout, input-channel adaptation, head/norm size or presence differences,
    missing ``num_batches_tracked`` and training -> deploy conversion. Returns the new dict and a report.
    """
    sd = _clean_state_dict(state_dict)
    model_sd = model.state_dict()
    report: Dict[str, Any] = dict(adapted_in_chans=None, dropped=[], kept_from_model=[], renamed=[], converted=None)

    file_form = _state_dict_form(sd)
    model_form = 'deploy' if model.deploy else 'train'
    if file_form == 'deploy' and model_form == 'train':
        raise ValueError(
            'the checkpoint is in deploy (re-parameterized) form but the model is in training form; '
            'build the model with deploy=True to load it')
    if file_form == 'train' and model_form == 'deploy':
        # build a training-form twin, load the file there, re-parameterize it and take its weights; the twin is
        # built on `meta` (no random init) when every tensor comes from the file
        twin = UniRepLKNet(**model._arch_args, device='meta' if strict else None)
        twin_sd, twin_report = _adapt_state_dict(sd, twin, adapt_in_chans=True, strict=strict)
        twin.load_state_dict(twin_sd, strict=strict, assign=strict)
        twin.eval()
        twin.reparameterize()
        sd = twin.state_dict()
        for k in list(sd):
            if k in twin_report['kept_from_model'] or sd[k].is_meta:
                if k in model_sd:
                    sd[k] = model_sd[k]
                else:
                    del sd[k]
        twin_report['converted'] = 'train->deploy'
        return sd, twin_report

    # older deploy layout: dwconv.{weight,bias} for every kernel size
    if file_form == 'deploy':
        for k in list(sd):
            m = re.match(r'^(stages\.\d+\.\d+\.dwconv)\.(weight|bias)$', k)
            if m and k not in model_sd and f'{m.group(1)}.lk_origin.{m.group(2)}' in model_sd:
                new_k = f'{m.group(1)}.lk_origin.{m.group(2)}'
                sd[new_k] = sd.pop(k)
                report['renamed'].append((k, new_k))

    # input channels
    if _STEM_KEY in sd and _STEM_KEY in model_sd:
        w, target = sd[_STEM_KEY], model_sd[_STEM_KEY]
        if adapt_in_chans and w.ndim == 4 and w.shape[1] != target.shape[1]:
            sd[_STEM_KEY] = adapt_input_conv(target.shape[1], w, base_chans=w.shape[1])
            report['adapted_in_chans'] = (int(w.shape[1]), int(target.shape[1]))

    # classifier / final norm / dense norms: drop what the model lacks or sizes differently, keep the model's own
    for k in list(sd):
        if _HEAD_KEYS.match(k) and (k not in model_sd or sd[k].shape != model_sd[k].shape):
            del sd[k]
            report['dropped'].append(k)
    for k in model_sd:
        if _HEAD_KEYS.match(k) and k not in sd:
            sd[k] = model_sd[k]
            report['kept_from_model'].append(k)

    # num_batches_tracked is optional in the files
    for k in model_sd:
        if k.endswith('num_batches_tracked') and k not in sd:
            sd[k] = model_sd[k]
    for k in list(sd):
        if k.endswith('num_batches_tracked') and k not in model_sd:
            del sd[k]
    return sd, report


def checkpoint_filter_fn(state_dict: Mapping[str, Any], model: UniRepLKNet) -> Dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn``: released-layout state dict -> ``model``'s keys (see :func:`load_checkpoint`).

    Input-channel adaptation is left to timm's ``load_pretrained`` (it knows the source channels from the
    pretrained cfg), except when converting a training-form file for a deploy-form model.
    """
    sd = _unwrap_state_dict(state_dict)
    sd, report = _adapt_state_dict(sd, model, adapt_in_chans=False)
    _log_report(report)
    return sd


def _log_report(report: Mapping[str, Any]) -> None:
    if report.get('converted'):
        _logger.info('Converted the checkpoint %s', report['converted'])
    if report.get('renamed'):
        _logger.info('Mapped %d keys of the older deploy layout (dwconv.* -> dwconv.lk_origin.*)',
                     len(report['renamed']))
    if report.get('adapted_in_chans'):
        _logger.info('Adapted the stem conv from %d to %d input channels', *report['adapted_in_chans'])
    if report.get('dropped'):
        _logger.info('Dropped checkpoint entries the model lacks or sizes differently: %s', report['dropped'])
    if report.get('kept_from_model'):
        _logger.info('Kept the model\'s own (initial) values for entries absent from the checkpoint: %s',
                     report['kept_from_model'])


def read_checkpoint(path: Union[str, os.PathLike], use_ema: bool = False) -> Dict[str, torch.Tensor]:
    """Read a state dict from ``.pth``/``.pt`` (``torch.load(weights_only=True)``) or ``.safetensors``.

    Args:
        path: file path.
        use_ema: prefer ``model_ema``/``state_dict_ema`` when the file has them.

    Raises:
        ValueError: the file holds Python objects other than tensors/containers (refused, never unpickled).
    """
    path = os.fspath(path)
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        obj = load_file(path, device='cpu')
    else:
        try:
            obj = torch.load(path, map_location='cpu', weights_only=True)
        except pickle.UnpicklingError as err:
            raise ValueError(
                f'refusing to load {path!r}: it contains Python objects other than tensors, so it cannot be '
                f'loaded safely (torch.load(weights_only=True) failed: {str(err).splitlines()[0]})') from err
    return _clean_state_dict(_unwrap_state_dict(obj, use_ema=use_ema))


def load_checkpoint(
        model: UniRepLKNet,
        path_or_state_dict: Union[str, os.PathLike, Mapping[str, Any]],
        strict: bool = True,
        use_ema: bool = False,
) -> Dict[str, Any]:
    """Load a checkpoint in the released layout into ``model``.

    Accepts training or deploy form (a training-form file is re-parameterized for a deploy-form model; a
    deploy-form file needs ``deploy=True``), the older deploy layout, ``model``/``state_dict`` wrappers,
    ``module.`` prefixes and files without ``num_batches_tracked``. Adapts the stem to ``model.in_chans`` and
    drops a classifier (or final norm) the model lacks or sizes differently, keeping the model's own.

    Args:
        model: the target model.
        path_or_state_dict: ``.pth``/``.pt``/``.safetensors`` path, or a (possibly wrapped) state dict.
        strict: strict ``load_state_dict`` after adaptation.
        use_ema: prefer EMA weights when the file has them.

    Returns:
        A report: ``adapted_in_chans`` ((file, model) or None), ``dropped``, ``kept_from_model``, ``renamed``,
        ``converted`` (``'train->deploy'`` or None), ``missing_keys``, ``unexpected_keys``.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        sd = read_checkpoint(path_or_state_dict, use_ema=use_ema)
        _logger.info('Loading checkpoint %s', os.fspath(path_or_state_dict))
    else:
        sd = _clean_state_dict(_unwrap_state_dict(path_or_state_dict, use_ema=use_ema))
    sd, report = _adapt_state_dict(sd, model, adapt_in_chans=True, strict=strict)
    result = model.load_state_dict(sd, strict=strict)
    report['missing_keys'] = list(result.missing_keys)
    report['unexpected_keys'] = list(result.unexpected_keys)
    _log_report(report)
    return report


# ---------------------------------------------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------------------------------------------

def _create_unireplknet(variant: str, pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    out_indices = kwargs.pop('out_indices', (0, 1, 2, 3))
    return build_model_with_cfg(
        UniRepLKNet, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls='getter'),
        **kwargs,
    )


_HF_HUB_ID = 'DingXiaoH/UniRepLKNet'


def _cfg(file: Optional[str] = None, **kwargs: Any) -> Dict[str, Any]:
    return {
        'url': '',
        'hf_hub_id': _HF_HUB_ID if file else None,
        'hf_hub_filename': file,
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7),
        'crop_pct': 0.875, 'interpolation': 'bicubic',
        'mean': IMAGENET_DEFAULT_MEAN, 'std': IMAGENET_DEFAULT_STD,
        'first_conv': 'downsample_layers.0.0', 'classifier': 'head',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2311.15599',
        **kwargs,
    }


def _cfg_384(file: str) -> Dict[str, Any]:
    return _cfg(file, input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)


def _cfg_22k(file: str, size: int = 224) -> Dict[str, Any]:
    return _cfg(file, num_classes=21841, input_size=(3, size, size), pool_size=(size // 32, size // 32))


default_cfgs = generate_default_cfgs({
    'unireplknet_a.in1k': _cfg('unireplknet_a_in1k_224_acc77.03.pth'),
    'unireplknet_f.in1k': _cfg('unireplknet_f_in1k_224_acc78.58.pth'),
    'unireplknet_p.in1k': _cfg('unireplknet_p_in1k_224_acc80.23.pth'),
    'unireplknet_n.in1k': _cfg('unireplknet_n_in1k_224_acc81.64.pth'),
    'unireplknet_t.in1k': _cfg('unireplknet_t_in1k_224_acc83.21.pth'),
    'unireplknet_s.in1k': _cfg('unireplknet_s_in1k_224_acc83.91.pth'),
    'unireplknet_s.in22k_ft_in1k_384': _cfg_384('unireplknet_s_in22k_to_in1k_384_acc86.44.pth'),
    'unireplknet_s.in22k': _cfg_22k('unireplknet_s_in22k_pretrain.pth'),
    'unireplknet_b.in22k_ft_in1k_384': _cfg_384('unireplknet_b_in22k_to_in1k_384_acc87.40.pth'),
    'unireplknet_b.in22k': _cfg_22k('unireplknet_b_in22k_pretrain.pth'),
    'unireplknet_l.in22k_ft_in1k_384': _cfg_384('unireplknet_l_in22k_to_in1k_384_acc87.88.pth'),
    'unireplknet_l.in22k': _cfg_22k('unireplknet_l_in22k_pretrain.pth', size=192),
    'unireplknet_xl.in22k_ft_in1k_384': _cfg_384('unireplknet_xl_in22k_to_in1k_384_acc87.96.pth'),
    'unireplknet_xl.in22k': _cfg_22k('unireplknet_xl_in22k_pretrain.pth', size=192),
    'unireplknet_test': _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
    'unireplknet_test_k17': _cfg(input_size=(3, 64, 64), pool_size=(2, 2)),
})


def _variant(variant: str, pretrained: bool, depths, dims, kwargs: Dict[str, Any]) -> UniRepLKNet:
    return _create_unireplknet(variant, pretrained=pretrained, **dict(dict(depths=depths, dims=dims), **kwargs))


@register_model
def unireplknet_a(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-A (4.4M deploy params)."""
    return _variant('unireplknet_a', pretrained, (2, 2, 6, 2), (40, 80, 160, 320), kwargs)


@register_model
def unireplknet_f(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-F (6.2M)."""
    return _variant('unireplknet_f', pretrained, (2, 2, 6, 2), (48, 96, 192, 384), kwargs)


@register_model
def unireplknet_p(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-P (10.7M)."""
    return _variant('unireplknet_p', pretrained, (2, 2, 6, 2), (64, 128, 256, 512), kwargs)


@register_model
def unireplknet_n(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-N (18.3M)."""
    return _variant('unireplknet_n', pretrained, (2, 2, 8, 2), (80, 160, 320, 640), kwargs)


@register_model
def unireplknet_t(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-T (31.0M)."""
    return _variant('unireplknet_t', pretrained, (3, 3, 18, 3), (80, 160, 320, 640), kwargs)


@register_model
def unireplknet_s(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-S (55.6M)."""
    return _variant('unireplknet_s', pretrained, (3, 3, 27, 3), (96, 192, 384, 768), kwargs)


@register_model
def unireplknet_b(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-B (98.0M)."""
    return _variant('unireplknet_b', pretrained, (3, 3, 27, 3), (128, 256, 512, 1024), kwargs)


@register_model
def unireplknet_l(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-L (218.5M)."""
    return _variant('unireplknet_l', pretrained, (3, 3, 27, 3), (192, 384, 768, 1536), kwargs)


@register_model
def unireplknet_xl(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """UniRepLKNet-XL (386.5M)."""
    return _variant('unireplknet_xl', pretrained, (3, 3, 27, 3), (256, 512, 1024, 2048), kwargs)


@register_model
def unireplknet_test(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """Tiny test variant: depths (1, 1, 2, 1), dims (16, 32, 64, 128), kernels 3 / 13 / (7, 3) / 9."""
    kwargs.setdefault('kernel_sizes', ((3,), (13,), (7, 3), (9,)))
    return _variant('unireplknet_test', pretrained, (1, 1, 2, 1), (16, 32, 64, 128), kwargs)


@register_model
def unireplknet_test_k17(pretrained: bool = False, **kwargs: Any) -> UniRepLKNet:
    """Tiny test variant with the larger reparam kernels: 5 / 17 / (15, 11) / 13 (plus a kernel-3 block)."""
    kwargs.setdefault('kernel_sizes', ((5,), (17,), (15, 11), (13, 3)))
    return _variant('unireplknet_test_k17', pretrained, (1, 1, 2, 2), (16, 32, 64, 128), kwargs)
