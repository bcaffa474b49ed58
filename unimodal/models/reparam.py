"""Pure functions for UniRepLKNet structural re-parameterization.

Everything here takes and returns tensors (BatchNorm modules are only read), so the merge math can be tested on
its own and reused by the checkpoint converter:

* :func:`fuse_conv_bn` - fold an eval-mode BatchNorm into the preceding convolution.
* :func:`dilate_kernel` - expand a dilated kernel to the equivalent dense kernel (insert ``r - 1`` zeros between taps).
* :func:`pad_kernel` - zero-pad a square kernel (centred) to a larger odd size.
* :func:`merge_dilated_branches` - the Dilated Reparam Block merge: dilate, pad and add every branch.
* :func:`fuse_linear_bn`, :func:`fold_bias_through_linear`, :func:`scale_linear` - the FFN folds.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    'bn_scale_shift', 'fuse_conv_bn', 'dilate_kernel', 'dilated_kernel_size', 'pad_kernel',
    'merge_dilated_branches', 'fuse_linear_bn', 'fold_bias_through_linear', 'scale_linear',
]

Tensor = torch.Tensor


def bn_scale_shift(bn: nn.modules.batchnorm._BatchNorm) -> Tuple[Tensor, Tensor]:
    """Per-channel ``(scale, shift)`` such that ``bn(x) == x * scale + shift`` in eval mode.

    Args:
        bn: a BatchNorm (or SyncBatchNorm) with running statistics; a missing affine part counts as identity.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError('BatchNorm without running statistics cannot be folded')
    std = torch.sqrt(bn.running_var + bn.eps)
    weight = bn.weight if bn.weight is not None else torch.ones_like(std)
    bias = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = weight / std
    shift = bias - bn.running_mean * scale
    return scale, shift


def fuse_conv_bn(
        kernel: Tensor,
        bn: nn.modules.batchnorm._BatchNorm,
        bias: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Fold ``bn(conv(x))`` into one convolution.

    Args:
        kernel: conv weight ``(C_out, C_in / groups, kh, kw)``.
        bn: the BatchNorm applied to the conv output (eval statistics are used).
        bias: the conv bias, if any.

    Returns:
        ``(kernel, bias)`` of the equivalent convolution (bias always present).
    """
    scale, shift = bn_scale_shift(bn)
    new_kernel = kernel * scale.reshape(-1, 1, 1, 1)
    new_bias = shift if bias is None else bias * scale + shift
    return new_kernel, new_bias


def dilated_kernel_size(kernel_size: int, dilation: int) -> int:
    """Size of the dense kernel equivalent to a ``kernel_size`` kernel at ``dilation``: ``r * (k - 1) + 1``."""
    return dilation * (kernel_size - 1) + 1


def dilate_kernel(kernel: Tensor, dilation: int) -> Tensor:
    """Expand a dilated kernel to the equivalent dense one by inserting ``dilation - 1`` zeros between taps.

    ``conv2d(x, dilate_kernel(w, r), padding=p) == conv2d(x, w, dilation=r, padding=p)``.

    Args:
        kernel: ``(..., k, k)`` weight.
        dilation: the dilation rate ``r`` (>= 1).
    """
    if dilation < 1:
        raise ValueError(f'dilation must be >= 1, got {dilation}')
    if dilation == 1:
        return kernel
    kh, kw = kernel.shape[-2:]
    out = kernel.new_zeros(*kernel.shape[:-2], dilated_kernel_size(kh, dilation), dilated_kernel_size(kw, dilation))
    out[..., ::dilation, ::dilation] = kernel
    return out


def pad_kernel(kernel: Tensor, size: int) -> Tensor:
    """Zero-pad a square ``(..., k, k)`` kernel symmetrically to ``(..., size, size)`` (``size - k`` even)."""
    k = kernel.shape[-1]
    if kernel.shape[-2] != k:
        raise ValueError(f'expected a square kernel, got {tuple(kernel.shape[-2:])}')
    if size < k or (size - k) % 2:
        raise ValueError(f'cannot centre-pad a {k}x{k} kernel to {size}x{size}')
    if size == k:
        return kernel
    p = (size - k) // 2
    return F.pad(kernel, [p, p, p, p])


def merge_dilated_branches(
        kernel: Tensor,
        bias: Tensor,
        branches: Iterable[Tuple[Tensor, Tensor, int]],
) -> Tuple[Tensor, Tensor]:
    """Merge parallel (dilated) depthwise branches into one large kernel.

    Args:
        kernel: the main ``(C, 1, K, K)`` kernel (BatchNorm already fused).
        bias: the main bias ``(C,)``.
        branches: ``(kernel, bias, dilation)`` of each branch (BatchNorm already fused); each dilated kernel must
            not exceed ``K`` once expanded.

    Returns:
        ``(kernel, bias)`` of the single equivalent ``K x K`` convolution.
    """
    size = kernel.shape[-1]
    kernel = kernel.clone()
    bias = bias.clone()
    for b_kernel, b_bias, dilation in branches:
        kernel = kernel + pad_kernel(dilate_kernel(b_kernel, dilation), size)
        bias = bias + b_bias
    return kernel, bias


def fuse_linear_bn(
        weight: Tensor,
        bias: Optional[Tensor],
        bn: nn.modules.batchnorm._BatchNorm,
) -> Tuple[Tensor, Tensor]:
    """Fold ``bn(linear(x))`` (BatchNorm over the Linear's output features) into one Linear.

    Args:
        weight: ``(out, in)`` Linear weight.
        bias: ``(out,)`` Linear bias or ``None``.
        bn: the BatchNorm over the ``out`` channels (eval statistics are used).
    """
    scale, shift = bn_scale_shift(bn)
    new_weight = weight * scale.reshape(-1, 1)
    new_bias = shift if bias is None else bias * scale + shift
    return new_weight, new_bias


def fold_bias_through_linear(weight: Tensor, bias: Optional[Tensor], in_bias: Tensor) -> Tensor:
    """Bias of ``linear(x + in_bias)`` written as ``linear'(x)``: ``bias + weight @ in_bias``.

    Args:
        weight: ``(out, in)`` Linear weight.
        bias: ``(out,)`` Linear bias or ``None``.
        in_bias: an additive ``(in,)`` term on the Linear's input (any shape with ``in`` elements).
    """
    folded = weight @ in_bias.reshape(-1).to(weight.dtype)
    return folded if bias is None else bias + folded


def scale_linear(weight: Tensor, bias: Optional[Tensor], scale: Tensor) -> Tuple[Tensor, Optional[Tensor]]:
    """Fold a per-output-channel scale (e.g. layer scale) into a Linear: ``scale * linear(x)``."""
    scale = scale.reshape(-1)
    return weight * scale.reshape(-1, 1), (None if bias is None else bias * scale)
