"""Helpers shared by the trunk tests (imported as ``_helpers``: pytest puts this folder on ``sys.path``)."""
import torch
from torch import nn

from unimodal.models.unireplknet import GRN, UniRepLKNetBlock


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 error of ``a`` against the reference ``b``."""
    return ((a - b).norm() / b.norm()).item()


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics/affine, GRN gamma/beta and layer scales, so a wrong load or fold shows up
    (fresh models have layer scale 1e-6 and identity BN, which would hide it)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(1 + torch.randn(n, generator=g) * 0.3)
                m.bias.copy_(torch.randn(n, generator=g) * 0.3)
            elif isinstance(m, GRN):
                m.gamma.copy_(torch.randn(m.gamma.shape, generator=g) * 0.5)
                if m.beta is not None:
                    m.beta.copy_(torch.randn(m.beta.shape, generator=g) * 0.5)
            if isinstance(m, UniRepLKNetBlock) and m.gamma is not None:
                m.gamma.copy_(torch.randn(m.gamma.shape, generator=g) * 0.5)
    return module
