"""The fast UniRepLKNet implementation against the plain module-by-module math (outputs, gradients, BN state)."""
import copy

import pytest
import timm
import torch
import torch.nn.functional as F

import unimodal.layers.fast_path as FP
from unimodal.models.unireplknet import DilatedReparamBlock, UniRepLKNetBlock
from _helpers import randomize_, rel_err


def pair(name='unireplknet_test', **kwargs):
    torch.manual_seed(0)
    fast = randomize_(timm.create_model(name, **kwargs), seed=3)
    ref = copy.deepcopy(fast)
    ref.set_fast_path(False)
    assert fast.fast_path and all(b.fast_path for s in fast.stages for b in s)
    assert not any(b.fast_path for s in ref.stages for b in s)
    return fast, ref


def grads_match(fast, ref, tol=1e-4):
    """Per-tensor relative error of the gradients; tensors whose gradient is (near) zero in math (a bias right
    before a training-mode BatchNorm) get an absolute floor of 1e-5 x the largest gradient norm instead (both sides
    are rounding noise there)."""
    scale = max(q.grad.norm().item() for q in ref.parameters() if q.grad is not None)
    for (n, p), (_, q) in zip(fast.named_parameters(), ref.named_parameters()):
        err = (p.grad - q.grad).norm().item()
        assert err <= tol * q.grad.norm().item() + 1e-5 * scale, (n, err, q.grad.norm().item(), scale)


def eval_outputs(fast, ref, deploy):
    """Both in eval mode (re-parameterized when ``deploy``) on one input: ``(fast out, plain out, input)``."""
    fast.eval(), ref.eval()
    if deploy:
        fast.reparameterize(), ref.reparameterize()
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        return fast(x), ref(x), x


def step_matches(fast, ref, x, buffers=False):
    """Forward, backward of a loss, gradients (and BatchNorm buffers) of both implementations agree."""
    a, b = fast(x), ref(x)
    assert rel_err(a, b) <= 1e-5
    a.square().mean().backward()
    b.square().mean().backward()
    grads_match(fast, ref)
    if buffers:
        for (n, u), (_, v) in zip(fast.named_buffers(), ref.named_buffers()):
            assert torch.allclose(u.float(), v.float(), rtol=1e-5, atol=1e-6), n


@pytest.mark.parametrize('name', ['unireplknet_test', 'unireplknet_test_k17'])
@pytest.mark.parametrize('deploy', [False, True])
def test_inference_matches_reference(name, deploy):
    fast, ref = pair(name)
    a, b, x = eval_outputs(fast, ref, deploy)
    with torch.inference_mode():
        fa, fb = fast.forward_features(x), ref.forward_features(x)
    assert rel_err(a, b) <= 1e-5
    assert rel_err(fa, fb) <= 1e-5
    assert fa.is_contiguous()  # channels-last inside, plain NCHW out


@pytest.mark.parametrize('per_chunk,approximate', [(1, 'none'), (2, 'none'), (3, 'none'), (2, 'tanh')])
def test_chunked_stem_matches_reference(monkeypatch, per_chunk, approximate):
    """Inference runs the stem in batch chunks with GELU in place: 1 image per chunk, 2 (a partial last chunk),
    or all 3 at once; the model's forward must take that path and leave its input untouched."""
    fast, ref = pair()
    fast.eval(), ref.eval()
    for m in (fast, ref):
        m.downsample_layers[0][2].approximate = approximate
    x = torch.randn(3, 3, 64, 64)
    x_before = x.clone()
    sample_bytes = fast.downsample_layers[0][0].out_channels * 32 * 32 * 4  # its 32x32 fp32 map per image
    monkeypatch.setattr(FP, '_STEM_CHUNK_BYTES', per_chunk * sample_bytes)
    chunked = []
    original = FP.chunked_stem
    monkeypatch.setattr(FP, 'chunked_stem', lambda stem, x: chunked.append(1) or original(stem, x))
    with torch.inference_mode():
        assert rel_err(fast(x), ref(x)) <= 1e-5
        assert chunked, 'the forward did not use the chunked stem'
        a, b = FP.chunked_stem(fast.downsample_layers[0], x), ref.downsample_layers[0](x)
    assert rel_err(a, b) <= 1e-6
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x, x_before)


def test_chunked_stem_falls_back():
    """Training, hooks (module or global), a swapped-in batch-statistics layer and tiny inputs."""
    fast, ref = pair()
    fast.eval(), ref.eval()
    x = torch.randn(3, 3, 64, 64)
    stem = fast.downsample_layers[0]
    with torch.inference_mode():
        assert FP.chunked_stem_applies(stem, x)
        tiny = torch.randn(3, 3, 1, 1)  # a 1x1 input must not make the chunk size divide by zero
        assert rel_err(FP.chunked_stem(stem, tiny), ref.downsample_layers[0](tiny)) <= 1e-6
        assert not FP.chunked_stem_applies(stem, x[:1])
    with torch.enable_grad():
        assert not FP.chunked_stem_applies(stem, x)  # training keeps the whole-batch stem (autograd)
    handle = fast.downsample_layers[0][1].register_forward_hook(lambda *a: None)
    with torch.inference_mode():
        assert not FP.chunked_stem_applies(stem, x)  # the hook would see norm1's output, then GELU overwrites it
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        with torch.inference_mode():
            assert not FP.chunked_stem_applies(stem, x)
    finally:
        handle.remove()
    fast.downsample_layers[0][1] = torch.nn.BatchNorm2d(fast.downsample_layers[0][1].normalized_shape[0])
    with torch.inference_mode():
        assert not FP.chunked_stem_applies(stem, x)  # not per-sample: chunk statistics would differ in train mode


@pytest.mark.parametrize('name,size,isa,dilated_convs', [
    ('unireplknet_test', 64, None, False), ('unireplknet_test_k17', 64, None, False),  # maps <= 16x16: Toeplitz
    ('unireplknet_test_k17', 128, None, True), ('unireplknet_test_k17', 128, 'AVX2', False)])
def test_training_step_matches_reference(monkeypatch, name, size, isa, dilated_convs):
    """Training mode (batch-statistics BN; dilated branches as Toeplitz matmuls on small maps, on larger ones as
    dilated convs, or as dense convs on a CPU without AVX-512): outputs, grads, BN running stats."""
    if isa is not None:
        monkeypatch.setattr(torch.backends.cpu, 'get_cpu_capability', lambda: isa)
    dilated = []
    conv2d = FP.F.conv2d
    monkeypatch.setattr(FP.F, 'conv2d', lambda x, w, *a: dilated.append(
        len(a) > 3 and a[3] not in (1, (1, 1))) or conv2d(x, w, *a))
    fast, ref = pair(name, in_chans=1)
    fast.train(), ref.train()
    x = torch.randn(2, 1, size, size)
    copy.deepcopy(fast)(x)
    assert any(dilated) == dilated_convs  # AVX2: every branch dense-expanded (e.g. 7x7 r2 as 13x13)
    step_matches(fast, ref, x, buffers=True)


def test_frozen_bn_training_matches_reference():
    """Eval-mode BNs with gradients (BN and dilated branches folded on the fly, differentiably)."""
    fast, ref = pair('unireplknet_test_k17')
    fast.eval(), ref.eval()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    xr = x.detach().clone().requires_grad_(True)
    a, b = fast(x), ref(xr)
    assert rel_err(a, b) <= 1e-5
    a.square().mean().backward()
    b.square().mean().backward()
    grads_match(fast, ref)
    assert rel_err(x.grad, xr.grad) <= 1e-4


def test_drop_path_training_runs_fast_path():
    fast, _ = pair('unireplknet_test', drop_path_rate=0.5)
    fast.train()
    out = fast(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert all(p.grad is not None for p in fast.parameters() if p.requires_grad and p.grad is not None)


@pytest.mark.parametrize('kernel', [3, 13])
@pytest.mark.parametrize('deploy', [False, True])
@pytest.mark.parametrize('size,chunk,onednn', [(20, 8 << 20, True), (20, 1, True), (20, 1, False), (6, 1, True)])
def test_block_inference_paths(monkeypatch, kernel, deploy, size, chunk, onednn):
    """CPU inference of one block (deploy form, or training form in eval mode): chunked / unchunked, oneDNN fused
    1x1 convs / oneDNN matmuls on the rows / plain ops, the depthwise conv channels-last (3x3) or on an NCHW copy
    (13x13); the path taken is checked by counting its calls."""
    monkeypatch.setattr(FP, '_FFN_CHUNK_BYTES', chunk)
    monkeypatch.setattr(FP, '_FFN_WEIGHTS_CHUNKED_MAX_BYTES', 1 << 40)
    monkeypatch.setattr(FP, '_HAS_ONEDNN_OPS', onednn and FP._HAS_ONEDNN_OPS)
    calls = {}
    for name in ('_onednn_ffn_', '_onednn_ffn_rows_', '_ffn'):
        fn = getattr(FP, name)
        monkeypatch.setattr(FP, name, lambda *a, _fn=fn, _n=name, **k: calls.__setitem__(_n, calls.get(_n, 0) + 1)
                            or _fn(*a, **k))
    for min_hw in (1, 10 ** 6):  # force the 1x1-conv FFN, then the matmul FFN
        monkeypatch.setattr(FP, '_CONV1X1_MIN_HW', min_hw)
        calls.clear()
        block = randomize_(UniRepLKNetBlock(16, kernel), seed=1).eval()
        if deploy:
            block.reparameterize()
        x = torch.randn(3, 16, size, size)
        with torch.no_grad():
            a = block(x)
            block.fast_path = False
            b = block(x)
        assert rel_err(a - x, b - x) <= 1e-5  # the residual branch, not the identity
        chunks = 3 if chunk == 1 else 1
        path = ('_onednn_ffn_' if min_hw == 1 else '_onednn_ffn_rows_') if FP._use_onednn(x) else '_ffn'
        assert calls == {path: chunks}, (calls, path, chunks)


def test_large_ffn_weights_run_unchunked(monkeypatch):
    monkeypatch.setattr(FP, '_FFN_CHUNK_BYTES', 1)
    monkeypatch.setattr(FP, '_FFN_WEIGHTS_CHUNKED_MAX_BYTES', 1)
    seen = []
    conv = FP.F.conv2d
    monkeypatch.setattr(FP.F, 'conv2d', lambda x, *a, **k: seen.append(x.shape[0]) or conv(x, *a, **k))
    block = randomize_(UniRepLKNetBlock(16, 13), seed=1).eval()
    x = torch.randn(3, 16, 12, 12)
    with torch.no_grad():
        a = block(x)
        block.fast_path = False
        b = block(x)
    assert rel_err(a - x, b - x) <= 1e-5
    assert seen[0] == 3  # the depthwise conv saw the whole batch


def test_per_sample_weight_folds():
    """Both SE / GRN fold directions: into per-sample weights (small C vs many pixels) and into activations."""
    for dim, size in ((8, 10), (64, 4)):
        block = randomize_(UniRepLKNetBlock(dim, 3), seed=2).train()
        x = torch.randn(2, dim, size, size, requires_grad=True)
        a = block(x)
        a.square().sum().backward()
        ga = x.grad.clone()
        x.grad = None
        block.fast_path = False
        b = block(x)
        b.square().sum().backward()
        assert rel_err(a - x, b - x) <= 1e-5
        assert rel_err(ga, x.grad) <= 1e-4


@pytest.mark.parametrize('k', [3, 7, 13])
def test_depthwise_as_matmul(k):
    x = torch.randn(2, 5, 6, 9)
    w = torch.randn(5, 1, k, k, requires_grad=True)
    (y,) = FP.depthwise_as_matmul(x, [w])
    ref = F.conv2d(x, w, None, 1, k // 2, 1, 5)
    assert rel_err(y, ref) <= 1e-6
    g1 = torch.autograd.grad(y.square().sum(), w)[0]
    g2 = torch.autograd.grad(ref.square().sum(), w)[0]
    assert rel_err(g1, g2) <= 1e-5


def test_merged_kernel_equals_branches():
    drb = randomize_(DilatedReparamBlock(8, 13), seed=4).eval()
    x = torch.randn(2, 8, 16, 16)
    w, b = drb.merged_kernel()
    with torch.no_grad():
        assert rel_err(F.conv2d(x, w, b, padding=6, groups=8), drb(x)) <= 1e-5


def _one_graph_both_forms():
    m = randomize_(timm.create_model('unireplknet_test'), seed=5).eval()
    x = torch.randn(2, 3, 32, 32)
    for deploy in (False, True):
        if deploy:
            m.reparameterize()
        torch._dynamo.reset()
        explain = torch._dynamo.explain(m)(x)
        assert explain.graph_break_count == 0, explain.break_reasons
        assert explain.graph_count == 1


def test_compile_fullgraph_both_forms():
    """torch.compile traces the fast trunk without graph breaks, training form and deploy form."""
    _one_graph_both_forms()


def test_grn_fast_path_gradient_is_finite_for_an_all_zero_channel():
    """A hidden channel that GELU zeroes everywhere must give finite gradients (sqrt'(0) would be inf)."""
    torch.manual_seed(0)
    model = timm.create_model('unireplknet_test', num_classes=3)
    block = model.stages[0][0]
    with torch.no_grad():  # make hidden channel 0 strongly negative before GELU -> exactly zero activations
        block.pwconv1[1].weight[0].zero_()
        block.pwconv1[1].bias[0] = -1e4
    model.train()
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


# ----- device options and the CUDA routing (checked on CPU tensors with the device check faked) -----

def test_device_options_are_validated_and_reach_every_block():
    with pytest.raises(ValueError, match='dw_backend.*igemm'):
        timm.create_model('unireplknet_test', dw_backend='igemm')
    with pytest.raises(ValueError, match='channels_last'):
        timm.create_model('unireplknet_test', channels_last='yes')
    with pytest.raises(TypeError, match="did you mean 'dw_backend'"):
        timm.create_model('unireplknet_test', dw_backnd='cudnn')
    m = timm.create_model('unireplknet_test', dw_backend=' Triton', channels_last=False)
    blocks = [b for s in m.stages for b in s]
    assert m.dw_backend == 'triton' and all(b.dw_backend == 'triton' and b.channels_last is False for b in blocks)
    m.set_device_options('auto', True)
    assert all(b.dw_backend == 'auto' and b.channels_last is True for b in blocks)
    with pytest.raises(ValueError, match='dw_backend'):
        m.set_device_options('fast')


@pytest.mark.parametrize('train', [False, True])
def test_nchw_option_on_cpu_matches_reference(train):
    """``channels_last=False`` (the CUDA default without a table) is honoured on CPU too and computes the same."""
    fast, ref = pair('unireplknet_test_k17')
    fast.set_device_options(channels_last=False)
    fast.train(train), ref.train(train)
    x = torch.randn(2, 3, 64, 64)
    if train:
        step_matches(fast, ref, x, buffers=True)
    else:
        with torch.inference_mode():
            assert rel_err(fast(x), ref(x)) <= 1e-5


class _Recorder:
    """Wraps a function, records each call's tensors' layout and other arguments."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.fn(*args, **kwargs)


@pytest.fixture
def fake_cuda(monkeypatch):
    """Route CPU tensors down the fast path's CUDA branch: the device check says 'cuda'; the kernels called
    (depthwise_conv, branch_convs) still run F.conv2d on CPU tensors, so the numbers must equal the plain math."""
    monkeypatch.setattr(FP, '_device', lambda x: 'cuda')
    rec = dict(dw=_Recorder(FP.depthwise_conv), branches=_Recorder(FP.branch_convs),
               onednn=_Recorder(FP._onednn_ffn_), stem=_Recorder(FP.chunked_stem),
               toeplitz=_Recorder(FP.depthwise_as_matmul))
    for name, attr in (('dw', 'depthwise_conv'), ('branches', 'branch_convs'), ('onednn', '_onednn_ffn_'),
                       ('stem', 'chunked_stem'), ('toeplitz', 'depthwise_as_matmul')):
        monkeypatch.setattr(FP, attr, rec[name])
    monkeypatch.setattr(FP, 'cuda_channels_last', lambda device, dtype, training: False)  # no recorded table
    return rec


def _dw_convs(model):
    """(block, kernel size, dilation) of every depthwise conv the blocks hold, training form."""
    out = []
    for block in (b for s in model.stages for b in s):
        if isinstance(block.dwconv, DilatedReparamBlock):
            out.append((block, block.dwconv.kernel_size, block.dwconv.branches))
        else:
            out.append((block, block.dwconv.kernel_size[0], None))
    return out


@pytest.mark.parametrize('channels_last', [None, True])
def test_cuda_route_training_calls_branch_convs(fake_cuda, channels_last):
    """Batch-statistics training on the CUDA route: every Dilated Reparam Block runs its branches as their own
    dilated convs through branch_convs (not the CPU's dense-expanded kernels or Toeplitz matmuls), the plain
    depthwise convs through depthwise_conv, on the trunk's backend; outputs, gradients and BN statistics equal
    the plain math."""
    fast, ref = pair('unireplknet_test_k17', in_chans=1)
    fast.set_device_options('cudnn', channels_last)
    fast.train(), ref.train()
    step_matches(fast, ref, torch.randn(2, 1, 64, 64), buffers=True)
    convs = _dw_convs(fast)
    drbs = [(blk, k, br) for blk, k, br in convs if br is not None]
    assert len(fake_cuda['branches'].calls) == len(drbs)
    for (args, kwargs), (blk, k, br) in zip(fake_cuda['branches'].calls, drbs):
        x_in, kernel, branches, backend = args
        assert kernel is blk.dwconv.lk_origin.weight and backend == 'cudnn'
        assert [(w.shape[-1], r) for w, r in branches] == br  # undilated weights with their rates
        assert all(w is getattr(blk.dwconv, f'dil_conv_k{kk}_{r}').weight for (w, r), (kk, _) in zip(branches, br))
        assert x_in.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    plain = [c for c in convs if c[2] is None]  # the 3x3 / 5x5 blocks: one depthwise_conv each
    assert len(fake_cuda['dw'].calls) == len(plain)
    for (args, kwargs), (blk, k, _) in zip(fake_cuda['dw'].calls, plain):
        assert args[1] is blk.dwconv.weight and args[2:] == (None, 1, k // 2, 'cudnn')
    assert not fake_cuda['toeplitz'].calls and not fake_cuda['onednn'].calls and not fake_cuda['stem'].calls


@pytest.mark.parametrize('deploy', [False, True])
@pytest.mark.parametrize('channels_last', [None, True])
def test_cuda_route_inference_calls_depthwise_conv(fake_cuda, deploy, channels_last):
    """Eval / deploy on the CUDA route: one depthwise_conv per block with the merged (or deploy) kernel, its
    'same' padding and dilation 1, on the trunk's backend; no CPU tricks (chunks, oneDNN post-ops, the chunked
    stem); the requested layout; outputs equal the plain math."""
    fast, ref = pair('unireplknet_test_k17')
    fast.set_device_options('triton', channels_last)  # on CPU tensors depthwise_conv still runs F.conv2d
    a, b, _ = eval_outputs(fast, ref, deploy)
    assert rel_err(a, b) <= 1e-5
    convs = _dw_convs(fast) if not deploy else [(blk, blk.kernel_size, None) for s in fast.stages for blk in s]
    calls = fake_cuda['dw'].calls
    assert len(calls) == len(convs) and not fake_cuda['branches'].calls
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    for (args, kwargs), (blk, k, _) in zip(calls, convs):
        x_in, weight, bias, dilation, padding, backend = args
        assert weight.shape == (blk.dim, 1, k, k) and bias.shape == (blk.dim,)
        assert (dilation, padding, backend) == (1, k // 2, 'triton')
        assert x_in.is_contiguous(memory_format=fmt)
    assert not fake_cuda['onednn'].calls and not fake_cuda['stem'].calls


def test_cuda_route_frozen_bn_gradients(fake_cuda):
    """Frozen-BN fine-tuning on the CUDA route: the merged kernel through depthwise_conv, differentiably."""
    fast, ref = pair('unireplknet_test_k17')
    fast.set_device_options('auto', None)
    fast.eval(), ref.eval()
    step_matches(fast, ref, torch.randn(2, 3, 64, 64))
    assert fake_cuda['dw'].calls and all(c[0][5] == 'auto' for c in fake_cuda['dw'].calls)


def test_cuda_route_compiles_without_graph_breaks(fake_cuda, monkeypatch):
    """Under torch.compile the CUDA route keeps one graph: an ``auto`` backend stays on F.conv2d (no file read
    in the graph), the layout default (the real table lookup) is a constant of the graph."""
    from unimodal.layers import dwconv
    monkeypatch.setattr(FP, 'cuda_channels_last', dwconv.cuda_channels_last)
    monkeypatch.delenv(dwconv.ENV_TABLE, raising=False)
    monkeypatch.delenv(dwconv.ENV_BACKEND, raising=False)
    _one_graph_both_forms()
