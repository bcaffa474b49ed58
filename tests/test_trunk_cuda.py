"""The trunk on a GPU (skipped without CUDA; ``pytest -k cuda``): the fast path against the plain math in fp32
(outputs, gradients) in both layouts and on both depthwise conv backends, bf16 autocast within bf16 tolerance, and
the deploy form."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

from _helpers import randomize_, rel_err

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


def _pair(name='unireplknet_test', **options):
    torch.manual_seed(0)
    fast = randomize_(timm.create_model(name, num_classes=10, **options), seed=2).cuda()
    plain = copy.deepcopy(fast)
    plain.set_fast_path(False)
    return fast, plain


@pytest.fixture
def no_tf32():
    """Exact fp32 for the comparison (TF32 would round the inputs of convs / matmuls to 10 bits)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        yield
    torch.backends.cuda.matmul.allow_tf32 = old


# the Triton kernel in the trunk only in inference: each (K, dilation) of the training-form branches is another
# compile, the kernel's gradients are covered per shape by test_dwconv_cuda.py
@pytest.mark.parametrize('train,dw_backend,channels_last', [
    (False, 'auto', None), (True, 'auto', None), (True, 'cudnn', True), (False, 'triton', False),
    (False, 'triton', True)])
def test_cuda_fast_path_matches_plain_fp32(train, dw_backend, channels_last, no_tf32):
    if dw_backend == 'triton':
        pytest.importorskip('triton', reason='Triton is not installed')
    fast, plain = _pair(dw_backend=dw_backend, channels_last=channels_last)
    fast.train(train)
    plain.train(train)
    x = torch.randn(4, 3, 64, 64, device='cuda')
    y = torch.randint(0, 10, (4,), device='cuda')
    out_f, out_p = fast(x), plain(x)
    assert rel_err(out_f, out_p) < 1e-5
    F.cross_entropy(out_f, y).backward()
    F.cross_entropy(out_p, y).backward()
    for (n, a), (_, b) in zip(fast.named_parameters(), plain.named_parameters()):
        if b.grad is not None and b.grad.norm() > 1e-8:
            assert rel_err(a.grad, b.grad) < 1e-4, n


def test_cuda_bf16_autocast_and_deploy_form(no_tf32):
    fast, plain = _pair('unireplknet_a')
    fast.eval()
    plain.eval()
    x = torch.randn(8, 3, 96, 96, device='cuda')
    with torch.no_grad():
        ref = plain(x)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            got = fast(x)
        assert rel_err(got.float(), ref) < 5e-2
        deploy = copy.deepcopy(fast)
        deploy.reparameterize()
        assert rel_err(deploy(x), ref) < 1e-4


def test_cuda_bf16_training_step_is_finite():
    fast, _ = _pair('unireplknet_a')
    fast.train()
    opt = torch.optim.AdamW(fast.parameters(), lr=1e-3)
    x = torch.randn(8, 3, 96, 96, device='cuda')
    y = torch.randint(0, 10, (8,), device='cuda')
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            loss = F.cross_entropy(fast(x), y)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert all(torch.isfinite(p).all() for p in fast.parameters())
