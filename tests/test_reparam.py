"""The re-parameterization math: pure functions, the Dilated Reparam Block and single blocks."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unimodal.models import reparam as R
from unimodal.models.unireplknet import DRB_BRANCHES, DilatedReparamBlock, UniRepLKNetBlock
from _helpers import randomize_, rel_err

TOL = 1e-5


def _bn(c: int, seed: int = 0) -> nn.BatchNorm2d:
    return randomize_(nn.BatchNorm2d(c), seed).eval()


@pytest.mark.parametrize('bias', [False, True])
def test_fuse_conv_bn(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=bias)
    bn = _bn(6)
    x = torch.randn(2, 6, 11, 11)
    k, b = R.fuse_conv_bn(conv.weight, bn, conv.bias)
    with torch.no_grad():
        assert rel_err(F.conv2d(x, k, b, padding=2, groups=6), bn(conv(x))) < TOL


@pytest.mark.parametrize('k,r', [(3, 1), (3, 2), (3, 5), (5, 2), (7, 3), (9, 2)])
def test_dilate_kernel_equals_dilated_conv(k, r):
    torch.manual_seed(0)
    w = torch.randn(4, 1, k, k)
    x = torch.randn(2, 4, 23, 23)
    dense = R.dilate_kernel(w, r)
    assert dense.shape[-1] == R.dilated_kernel_size(k, r) == r * (k - 1) + 1
    p = (r * (k - 1) + 1) // 2
    ref = F.conv2d(x, w, padding=p, dilation=r, groups=4)
    assert rel_err(F.conv2d(x, dense, padding=p, groups=4), ref) < TOL
    # zeros really are between the taps
    assert torch.count_nonzero(dense) == torch.count_nonzero(w)


def test_dilate_kernel_rejects_bad_rate():
    with pytest.raises(ValueError):
        R.dilate_kernel(torch.randn(1, 1, 3, 3), 0)


def test_pad_kernel_keeps_function():
    w = torch.randn(3, 1, 3, 3)
    x = torch.randn(1, 3, 9, 9)
    big = R.pad_kernel(w, 7)
    assert big.shape[-1] == 7
    assert rel_err(F.conv2d(x, big, padding=3, groups=3), F.conv2d(x, w, padding=1, groups=3)) < TOL
    with pytest.raises(ValueError):
        R.pad_kernel(w, 6)


def test_merge_dilated_branches_equals_sum():
    torch.manual_seed(0)
    c, K = 4, 13
    main, main_b = torch.randn(c, 1, K, K), torch.randn(c)
    branches = [(torch.randn(c, 1, k, k), torch.randn(c), r) for k, r in zip(*DRB_BRANCHES[K])]
    x = torch.randn(2, c, 20, 20)
    ref = F.conv2d(x, main, main_b, padding=K // 2, groups=c)
    for w, b, r in branches:
        ref = ref + F.conv2d(x, w, b, padding=(r * (w.shape[-1] - 1) + 1) // 2, dilation=r, groups=c)
    k, b = R.merge_dilated_branches(main, main_b, branches)
    assert k.shape == main.shape
    assert rel_err(F.conv2d(x, k, b, padding=K // 2, groups=c), ref) < TOL


def test_linear_folds():
    torch.manual_seed(0)
    lin = nn.Linear(12, 5, bias=False)
    bn = _bn(5)
    beta = torch.randn(12)
    scale = torch.randn(5)
    x = torch.randn(3, 12)
    with torch.no_grad():
        ref = scale * F.batch_norm(lin(x + beta), bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)
        b = R.fold_bias_through_linear(lin.weight, lin.bias, beta)
        w, b = R.fuse_linear_bn(lin.weight, b, bn)
        w, b = R.scale_linear(w, b, scale)
        assert rel_err(F.linear(x, w, b), ref) < TOL


@pytest.mark.parametrize('kernel_size', sorted(DRB_BRANCHES))
def test_dilated_reparam_block_equivalence(kernel_size):
    torch.manual_seed(kernel_size)
    drb = randomize_(DilatedReparamBlock(8, kernel_size), seed=kernel_size).eval()
    x = torch.randn(2, 8, 24, 24)
    with torch.no_grad():
        before = drb(x)
        lk_only = drb.origin_bn(drb.lk_origin(x))
        drb.reparameterize()
        after = drb(x)
    assert rel_err(before, lk_only) > 1e-2  # the branches matter, so the test can fail
    assert rel_err(after, before) <= TOL
    assert set(drb.state_dict()) == {'lk_origin.weight', 'lk_origin.bias'}
    assert drb.lk_origin.weight.shape == (8, 1, kernel_size, kernel_size)
    # deploy-form construction has exactly this structure
    fresh = DilatedReparamBlock(8, kernel_size, deploy=True)
    fresh.load_state_dict(drb.state_dict(), strict=True)
    drb.reparameterize()  # idempotent


def test_dilated_reparam_block_branch_names():
    drb = DilatedReparamBlock(4, 13)
    names = {k.split('.')[0] for k in drb.state_dict()}
    assert names == {'lk_origin', 'origin_bn', 'dil_conv_k5_1', 'dil_conv_k7_2', 'dil_conv_k3_3', 'dil_conv_k3_4',
                     'dil_conv_k3_5', 'dil_bn_k5_1', 'dil_bn_k7_2', 'dil_bn_k3_3', 'dil_bn_k3_4', 'dil_bn_k3_5'}
    with pytest.raises(ValueError):
        DilatedReparamBlock(4, 19)


@pytest.mark.parametrize('kernel_size', [0, 3, 5, 7, 13, 17])
def test_block_equivalence(kernel_size):
    torch.manual_seed(0)
    block = randomize_(UniRepLKNetBlock(16, kernel_size), seed=kernel_size).eval()
    x = torch.randn(2, 16, 20, 20)
    with torch.no_grad():
        before = block(x)
        block.reparameterize()
        after = block(x)
    assert block.deploy and block.gamma is None and block.act[1].beta is None
    assert rel_err(after - x, before - x) <= TOL  # compare the residual branch, not the identity
    fresh = UniRepLKNetBlock(16, kernel_size, deploy=True)
    fresh.load_state_dict(block.state_dict(), strict=True)
