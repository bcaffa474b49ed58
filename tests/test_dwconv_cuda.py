"""The Triton depthwise conv and the backend choice on a GPU (skipped without CUDA; ``pytest -k cuda``)."""
import pytest
import torch
import torch.nn.functional as F

from _dwconv_cases import CASES, check_case

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
pytest.importorskip('triton', reason='Triton is not installed')

# realistic stage shapes of the trunk at 224 (B, C, H, W, K, dilation): 13x13 and the K=13 block's dilated branches
STAGE_SHAPES = [
    (8, 80, 28, 28, 13, 1), (8, 80, 28, 28, 7, 2), (8, 160, 14, 14, 3, 4), (2, 1024, 7, 7, 13, 1),
    (4, 64, 56, 56, 3, 1),
]


@cuda
@pytest.mark.parametrize('case', CASES, ids=[c[0] for c in CASES])
def test_cuda_triton_dwconv_cases(case):
    r = check_case(case, 'cuda')
    for key in ('y', 'dx', 'dw', 'db'):
        assert r[key] < r['tol'], f'{r["name"]}: {key} relative error {r[key]:.3g}'
    assert r['dtypes'] == [f'torch.{case[8]}'] * 4 and r['same_layout']


@cuda
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
@pytest.mark.parametrize('shape', STAGE_SHAPES, ids=lambda s: 'x'.join(map(str, s)))
def test_cuda_triton_dwconv_stage_shapes(shape, dtype, channels_last):
    b, c, h, w, k, d = shape
    r = check_case((f'stage_{shape}', b, c, h, w, k, d, channels_last, dtype, None), 'cuda')
    for key in ('y', 'dx', 'dw', 'db'):
        assert r[key] < r['tol'], f'{shape} {dtype}: {key} relative error {r[key]:.3g}'


@cuda
@pytest.mark.parametrize('backend', ['cudnn', 'triton'])
def test_cuda_depthwise_conv_autocast_grads_reach_fp32_weights(backend):
    from unimodal.layers.dwconv import depthwise_conv
    torch.manual_seed(0)
    x = torch.randn(4, 32, 20, 20, device='cuda', requires_grad=True)
    weight = torch.randn(32, 1, 13, 13, device='cuda', requires_grad=True)
    bias = torch.randn(32, device='cuda', requires_grad=True)
    with torch.autocast('cuda', dtype=torch.bfloat16):
        y = depthwise_conv(x, weight, bias, 1, None, backend)
    assert y.dtype == torch.bfloat16
    y.float().square().sum().backward()
    ref = [t.detach().clone().requires_grad_(True) for t in (x, weight, bias)]
    F.conv2d(*ref, 1, 6, 1, 32).square().sum().backward()
    for got, want in zip((x, weight, bias), ref):
        assert got.grad.dtype == torch.float32
        assert ((got.grad - want.grad).norm() / want.grad.norm()).item() < 3e-2


@cuda
def test_cuda_choose_backend_explicit_and_table(tmp_path, monkeypatch):
    import json
    from unimodal.layers import dwconv as D
    x = torch.randn(2, 16, 14, 14, device='cuda')
    w = torch.randn(16, 1, 13, 13, device='cuda')
    monkeypatch.setenv(D.ENV_BACKEND, 'triton')
    assert D.choose_backend(x, w)[0] == 'triton'
    monkeypatch.setenv(D.ENV_BACKEND, 'auto')
    entry = dict(batch=2, channels=16, height=14, width=14, kernel_size=13, dilation=1, dtype='float32',
                 channels_last=False, winner_forward='triton', winner_train='cudnn', triton_config=[128, 4, 4])
    path = tmp_path / 't.json'
    path.write_text(json.dumps(dict(format=D.TABLE_FORMAT, device_name=torch.cuda.get_device_name(), entries=[entry])))
    monkeypatch.setenv(D.ENV_TABLE, str(path))
    with torch.no_grad():
        assert D.choose_backend(x, w) == ('triton', (128, 4, 4))
        y = D.depthwise_conv(x, w)
    assert ((y - F.conv2d(x, w, None, 1, 6, 1, 16)).norm() / y.norm()).item() < 1e-5
    assert D.choose_backend(x, w, training=True) == ('cudnn', None)
