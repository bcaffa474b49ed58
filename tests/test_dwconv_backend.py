"""Depthwise conv backend choice (CPU-checkable parts) and the branch-merge identity."""
import json

import pytest
import torch
import torch.nn.functional as F

from unimodal.layers import dwconv as D
from unimodal.models.unireplknet import DRB_BRANCHES


def _entry(**kw):
    e = dict(batch=64, channels=128, height=28, width=28, kernel_size=13, dilation=1, dtype='bfloat16',
             channels_last=True, winner_forward='triton', winner_train='triton', triton_config=[64, 32, 4])
    e.update(kw)
    return e


def _table(entries, device='NVIDIA H200'):
    return dict(format=D.TABLE_FORMAT, device_name=device, entries=entries)


def test_resolve_backend_option_env_and_errors(monkeypatch):
    monkeypatch.delenv(D.ENV_BACKEND, raising=False)
    assert D.resolve_backend() == 'auto'
    monkeypatch.setenv(D.ENV_BACKEND, 'Triton')
    assert D.resolve_backend() == 'triton'
    assert D.resolve_backend('cudnn') == 'cudnn'  # the argument wins over the environment
    monkeypatch.setenv(D.ENV_BACKEND, 'igemm')
    with pytest.raises(ValueError, match=r'\$UNIMODAL_DWCONV.*igemm'):
        D.resolve_backend()
    with pytest.raises(ValueError, match='backend argument'):
        D.resolve_backend('fast')


@pytest.mark.parametrize('backend', ['auto', 'cudnn', 'triton'])
@pytest.mark.parametrize('channels_last', [False, True])
def test_cpu_always_takes_the_existing_path(backend, channels_last):
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 9, requires_grad=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 1, 5, 5, requires_grad=True)
    b = torch.randn(6)
    assert D.choose_backend(x, w, 2, backend) == ('torch', None)
    y = D.depthwise_conv(x, w, b, 2, None, backend)
    ref = F.conv2d(x, w, b, 1, 4, 2, 6)
    assert torch.equal(y, ref)
    # any padding F.conv2d takes is passed through off CUDA; a Conv2d's pairs are accepted
    assert D.depthwise_conv(x, w, b, 1, 0, backend).shape[-1] == 5
    assert torch.equal(D.depthwise_conv(x, w, b, (2, 2), (4, 4), backend), ref)
    with pytest.raises(ValueError, match='equal pair'):
        D.depthwise_conv(x, w, b, (2, 1), None, backend)


def test_table_choice_nearest_shape_and_mode():
    t = _table([
        _entry(channels=64, height=56, width=56, winner_forward='cudnn', winner_train='triton'),
        _entry(channels=512, height=7, width=7, winner_forward='triton', winner_train='cudnn', triton_config=None),
        _entry(dtype='float32', winner_forward='cudnn', winner_train='cudnn'),
    ])
    # nearest in (log B*H*W, log C): 64x56x56 for a 60-channel 52x52 map at batch 64
    assert D.table_choice(t, 'NVIDIA H200', 64, 60, 52, 52, 13, 1, torch.bfloat16, True, False) == ('cudnn', None)
    assert D.table_choice(t, 'NVIDIA H200', 64, 60, 52, 52, 13, 1, torch.bfloat16, True, True) == \
        ('triton', (64, 32, 4))
    assert D.table_choice(t, 'NVIDIA H200', 128, 480, 7, 7, 13, 1, torch.bfloat16, True, False) == ('triton', None)
    # the dtype, layout, kernel and dilation must match; another GPU model never uses the table
    assert D.table_choice(t, 'NVIDIA H200', 64, 128, 28, 28, 13, 1, torch.float32, True, True) == ('cudnn', None)
    assert D.table_choice(t, 'NVIDIA H200', 64, 64, 56, 56, 13, 1, torch.bfloat16, False, True) == ('cudnn', None)
    assert D.table_choice(t, 'NVIDIA H200', 64, 64, 56, 56, 13, 2, torch.bfloat16, True, True) == ('cudnn', None)
    assert D.table_choice(t, 'NVIDIA A100', 64, 64, 56, 56, 13, 1, torch.bfloat16, True, True) == ('cudnn', None)


def test_load_table_validates(tmp_path, monkeypatch):
    monkeypatch.delenv(D.ENV_TABLE, raising=False)
    good = tmp_path / 'good.json'
    good.write_text(json.dumps(_table([_entry()])))
    assert D.load_table(good)['entries'][0]['winner_train'] == 'triton'
    monkeypatch.setenv(D.ENV_TABLE, str(good))
    assert D.load_table()['device_name'] == 'NVIDIA H200'
    monkeypatch.setenv(D.ENV_TABLE, str(tmp_path / 'missing.json'))
    with pytest.raises(FileNotFoundError, match=r'missing\.json.*UNIMODAL_DWCONV_TABLE'):
        D.load_table()
    cases = {
        'format.json': (dict(device_name='x', entries=[]), 'format'),
        'device.json': (dict(format=D.TABLE_FORMAT, entries=[]), 'device_name'),
        'field.json': (_table([{k: v for k, v in _entry().items() if k != 'dilation'}]), r"entries\[0\].*dilation"),
        'winner.json': (_table([_entry(winner_train='igemm')]), r'entries\[0\]\.winner_train'),
        'config.json': (_table([_entry(), _entry(triton_config=[64, 32])]), r'entries\[1\]\.triton_config'),
    }
    for name, (obj, msg) in cases.items():
        p = tmp_path / name
        p.write_text(json.dumps(obj))
        with pytest.raises(ValueError, match=msg):
            D.load_table(p)
    bad = tmp_path / 'bad.json'
    bad.write_text('{')
    with pytest.raises(ValueError, match='not valid JSON'):
        D.load_table(bad)


@pytest.mark.parametrize('K', [13, 7])
@pytest.mark.parametrize('with_scales', [False, True])
def test_merged_branch_kernel_equals_branch_by_branch(K, with_scales):
    """One conv with the merged kernel == the sum of the branch convs: output, input gradient, every branch's
    weight gradient (and the scales' gradients)."""
    torch.manual_seed(0)
    c = 5
    dt = torch.float64
    ks, rs = DRB_BRANCHES[K]
    x = torch.randn(2, c, 17, 15, dtype=dt)
    main = torch.randn(c, 1, K, K, dtype=dt)
    ws = [torch.randn(c, 1, k, k, dtype=dt) for k in ks]
    scales = [torch.rand(c, dtype=dt) + 0.5 for _ in range(len(ks) + 1)] if with_scales else None
    dy = torch.randn(2, c, 17, 15, dtype=dt)

    def leaves():
        t = [x, main] + ws + (scales or [])
        return [v.clone().requires_grad_(True) for v in t]

    a = leaves()
    n = len(ks)
    sc = a[2 + n:] if with_scales else None
    merged = D.merged_branch_kernel(a[1], list(zip(a[2:2 + n], rs)), sc)
    y = F.conv2d(a[0], merged, None, 1, K // 2, 1, c)
    grads = torch.autograd.grad(y, a, dy)

    b = leaves()
    s = b[2 + n:] if with_scales else [None] * (n + 1)

    def scaled(t, v):
        return t if v is None else t * v.reshape(1, -1, 1, 1)

    ref = scaled(F.conv2d(b[0], b[1], None, 1, K // 2, 1, c), s[0])
    for w, r, v in zip(b[2:2 + n], rs, s[1:]):
        ref = ref + scaled(F.conv2d(b[0], w, None, 1, r * (w.shape[-1] - 1) // 2, r, c), v)
    ref_grads = torch.autograd.grad(ref, b, dy)

    assert merged.shape == (c, 1, K, K)
    assert torch.allclose(y, ref, rtol=1e-10, atol=1e-10)
    for name, g, rg in zip(['x', 'main'] + [f'k{k}_r{r}' for k, r in zip(ks, rs)] + ['scale'] * (n + 1),
                           grads, ref_grads):
        assert torch.allclose(g, rg, rtol=1e-10, atol=1e-10), name


def test_merged_branch_kernel_rejects_bad_branches():
    main = torch.randn(3, 1, 7, 7)
    with pytest.raises(ValueError, match='spans 9 > K=7'):
        D.merged_branch_kernel(main, [(torch.randn(3, 1, 5, 5), 2)])
    with pytest.raises(ValueError, match='scales'):
        D.merged_branch_kernel(main, [(torch.randn(3, 1, 3, 3), 2)], [None])


def test_branch_convs_are_the_branch_outputs():
    torch.manual_seed(0)
    x = torch.randn(1, 4, 11, 11)
    main = torch.randn(4, 1, 7, 7)
    br = [(torch.randn(4, 1, 5, 5), 1), (torch.randn(4, 1, 3, 3), 3)]
    outs = D.branch_convs(x, main, br, 'auto')
    assert len(outs) == 3
    assert torch.allclose(outs[2], F.conv2d(x, br[1][0], None, 1, 3, 3, 4))
    assert torch.allclose(sum(outs), F.conv2d(x, D.merged_branch_kernel(main, br), None, 1, 3, 1, 4), atol=1e-5)


def _timed(shape, cl, cudnn, triton, dtype='bfloat16'):
    b, c, h, k, d = shape
    return _entry(batch=b, channels=c, height=h, width=h, kernel_size=k, dilation=d, dtype=dtype,
                  channels_last=cl, cudnn_ms=dict(forward=cudnn[0], train=cudnn[1]),
                  triton_ms=dict(forward=triton[0], train=triton[1]))


def test_layout_choice_sums_the_faster_kernel_per_shape():
    s1, s2 = (64, 128, 28, 13, 1), (64, 256, 14, 7, 2)
    t = _table([
        # forward: NCHW 1.0 + 2.0 (faster kernel each) vs channels-last 1.5 + 1.6 -> NCHW; train: CL wins
        _timed(s1, False, (1.0, 9.0), (1.2, 8.0)), _timed(s2, False, (2.5, 6.0), (2.0, 6.5)),
        _timed(s1, True, (1.5, 5.0), (1.9, 4.0)), _timed(s2, True, (1.6, 3.0), (1.7, 3.5)),
        _timed((64, 80, 56, 3, 1), True, (0.1, 0.1), (0.1, 0.1)),  # one layout only: not compared
        _timed(s1, True, (0.1, 0.1), (0.1, 0.1), dtype='float32'),
        _entry(channels_last=False),  # no timings (an older table): ignored
    ])
    assert D.layout_choice(t, 'NVIDIA H200', 'bfloat16', training=False) is False
    assert D.layout_choice(t, 'NVIDIA H200', 'bfloat16', training=True) is True
    assert D.layout_choice(t, 'NVIDIA H200', 'float32', training=True) is None  # fp32 measured in one layout
    assert D.layout_choice(t, 'NVIDIA A100', 'bfloat16', training=True) is None


def test_cuda_channels_last_reads_the_table(tmp_path, monkeypatch):
    monkeypatch.setattr(D, 'DEFAULT_TABLE', tmp_path / 'absent.json')
    monkeypatch.delenv(D.ENV_TABLE, raising=False)
    assert D.cuda_channels_last(torch.device('cpu'), 'bfloat16', True) is False  # no table: NCHW
    s = (64, 128, 28, 13, 1)
    p = tmp_path / 'table.json'
    p.write_text(json.dumps(_table([_timed(s, False, (2.0, 4.0), (3.0, 5.0)), _timed(s, True, (1.0, 2.0),
                                                                                     (1.5, 2.5))])))
    monkeypatch.setenv(D.ENV_TABLE, str(p))
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'NVIDIA H200')
    assert D.cuda_channels_last(torch.device('cpu'), 'bfloat16', True) is True
    assert D.cuda_channels_last(torch.device('cpu'), 'float32', True) is False  # the table cannot tell
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda device=None: 'NVIDIA A100')
    assert D.cuda_channels_last(torch.device('cpu'), 'bfloat16', True) is False  # another GPU
