"""CPU inference backend choice: PyTorch or onnxruntime on the ONNX export, explicit or by a timed trial."""
import logging
import sys

import pytest
import timm
import torch

from unimodal.models import backend_select as BS
from _helpers import randomize_, rel_err

ort = pytest.importorskip('onnxruntime', reason='onnxruntime not installed')


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    m = randomize_(timm.create_model('unireplknet_test', num_classes=5), seed=1).eval()
    m.reparameterize()
    return m


def test_export_and_session_match_pytorch(model, tmp_path):
    x = torch.randn(3, 3, 32, 32)
    path = BS.export_onnx(model, x[:1], tmp_path / 'sub' / 'm.onnx')
    sess = BS.OrtModule(path, threads=1)
    with torch.inference_mode():
        assert rel_err(sess(x), model(x)) < 1e-5  # the batch axis is dynamic
    with pytest.raises(ValueError, match='CPU tensors'):
        sess(torch.empty(1, 3, 32, 32, device='meta'))


def test_options(model, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    assert BS.inference_backend('torch', model) == ('torch', model)
    name, fn = BS.inference_backend(' ONNXRuntime', model, x, onnx_dir=tmp_path)
    assert name == 'onnxruntime' and isinstance(fn, BS.OrtModule) and (tmp_path / 'model.onnx').is_file()
    with pytest.raises(ValueError, match="unknown option 'tensorrt'"):
        BS.inference_backend('tensorrt', model, x)
    with pytest.raises(ValueError, match='needs an example'):
        BS.inference_backend('auto', model)


def test_auto_picks_the_faster_by_trial(model, tmp_path, monkeypatch, caplog):
    x = torch.randn(2, 3, 32, 32)
    best, report = BS.fastest_cpu_backend(model, x, rounds=2, onnx_dir=tmp_path)
    med = report['median_s']
    assert best == min(med, key=med.get) and len(report['seconds']['torch']) == 2 and report['rel_err'] < 1e-5
    # a slowed-down PyTorch model loses the trial, a slowed-down session loses it too
    slow = _Slow(model)
    sess = BS.OrtModule(BS.export_onnx(model, x[:1], tmp_path / 'b.onnx'))
    assert BS.fastest_cpu_backend(slow, x, rounds=1, ort=sess)[0] == 'onnxruntime'
    assert BS.fastest_cpu_backend(model, x, rounds=1, ort=_Slow(sess, path=sess.path))[0] == 'torch'
    export = BS.export_onnx
    monkeypatch.setattr(BS, 'export_onnx', lambda m, ex, path, opset=17: export(model, ex, path, opset))
    with caplog.at_level(logging.INFO, logger=BS.__name__):
        name, fn = BS.inference_backend('auto', slow, x, onnx_dir=tmp_path, rounds=1)
    assert name == 'onnxruntime' and isinstance(fn, BS.OrtModule) and 'inference backend trial' in caplog.text


def test_auto_refuses_disagreeing_backends(model, tmp_path):
    x = torch.randn(2, 3, 32, 32)
    sess = BS.OrtModule(BS.export_onnx(model, x[:1], tmp_path / 'm.onnx'))
    with pytest.raises(RuntimeError, match='disagrees'):
        BS.fastest_cpu_backend(lambda t: model(t) + 1, x, ort=sess)


def test_auto_without_onnxruntime_uses_torch(model, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)  # import fails
    with caplog.at_level(logging.INFO, logger=BS.__name__):
        assert BS.inference_backend('auto', model, torch.randn(1, 3, 32, 32)) == ('torch', model)
    assert 'not installed' in caplog.text
    with pytest.raises(RuntimeError, match='pip install onnxruntime'):
        BS.inference_backend('onnxruntime', model, torch.randn(1, 3, 32, 32))


class _Slow:
    """A backend made slower (CPU busy work per call) with the same outputs."""

    def __init__(self, fn, path=None):
        self.fn, self.path = fn, path

    def __call__(self, x):
        a = torch.randn(384, 384)
        for _ in range(30):
            a = a @ a / 384
        return self.fn(x)
