"""The Dilated Reparam Block: a large depthwise kernel plus parallel dilated small kernels, mergeable into one."""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
from torch import nn

from ..models.reparam import fuse_conv_bn, merge_dilated_branches

__all__ = ['DRB_BRANCHES', 'DilatedReparamBlock', 'get_bn', 'conv_like']

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


def get_bn(channels: int, use_sync_bn: bool = False) -> nn.Module:
    """BatchNorm2d, or SyncBatchNorm for multi-GPU training."""
    return nn.SyncBatchNorm(channels) if use_sync_bn else nn.BatchNorm2d(channels)


def conv_like(like: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A biased conv with the geometry of ``like`` holding the given weight and bias."""
    conv = nn.Conv2d(
        like.in_channels, like.out_channels, like.kernel_size, stride=like.stride, padding=like.padding,
        dilation=like.dilation, groups=like.groups, bias=True, device=weight.device, dtype=weight.dtype,
    )
    conv.weight.data.copy_(weight)
    conv.bias.data.copy_(bias)
    return conv


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
                f'Dilated Reparam Block kernel size must be one of {", ".join(map(str, sorted(DRB_BRANCHES)))}, '
                f'got {kernel_size}')
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

    def branch_bns(self) -> List[nn.Module]:
        """The BatchNorms of ``lk_origin`` and of every dilated branch, in branch order."""
        return [self.origin_bn] + [getattr(self, f'dil_bn_k{k}_{r}') for k, r in self.branches]

    def merged_kernel(self) -> Tuple[torch.Tensor, torch.Tensor]:
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
        kernel, bias = self.merged_kernel()
        self.lk_origin = conv_like(self.lk_origin, kernel, bias)
        del self.origin_bn
        for k, r in self.branches:
            delattr(self, f'dil_conv_k{k}_{r}')
            delattr(self, f'dil_bn_k{k}_{r}')
        self.deploy = True
