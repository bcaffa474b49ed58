"""Checkpoints in the released layout: load strictly, in every wrapping and form; adapt; refuse unsafe files."""
import logging
import re

import pytest
import timm
import torch
from safetensors.torch import save_file

import unimodal.models.unireplknet_checkpoint as C
from unimodal.models.unireplknet import checkpoint_filter_fn, load_checkpoint
from _helpers import randomize_, rel_err

TOL = 1e-5


class NotATensor:
    """A Python object a weights-only load must refuse."""

    def __init__(self):
        self.payload = 'arbitrary'


@pytest.fixture(scope='module')
def source():
    """A random training-form model, its eval outputs and its deploy-form twin."""
    torch.manual_seed(0)
    model = randomize_(timm.create_model('unireplknet_test', num_classes=10), seed=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        y = model(x)
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    deploy = timm.utils.reparameterize_model(model)
    return dict(model=model, x=x, y=y, pre=pre, train_sd=model.state_dict(), deploy_sd=deploy.state_dict())


def _fresh(deploy=False, **kw):
    kw.setdefault('num_classes', 10)
    return timm.create_model('unireplknet_test', deploy=deploy, **kw).eval()


def _check(model, source, key='y'):
    with torch.no_grad():
        out = model(source['x']) if key == 'y' else model.forward_head(
            model.forward_features(source['x']), pre_logits=True)
    assert rel_err(out, source[key]) <= TOL


def _old_deploy_layout(sd):
    return {re.sub(r'\.dwconv\.lk_origin\.', '.dwconv.', k): v for k, v in sd.items()}


@pytest.mark.parametrize('layout', [
    'plain', 'model', 'state_dict', 'module_prefix', 'no_num_batches_tracked', 'safetensors', 'extra_metadata'])
def test_training_form_layouts(tmp_path, source, layout):
    sd = dict(source['train_sd'])
    path = tmp_path / 'ckpt.pth'
    if layout == 'model':
        torch.save({'model': sd}, path)
    elif layout == 'state_dict':
        torch.save({'state_dict': sd}, path)
    elif layout == 'module_prefix':
        torch.save({'model': {f'module.{k}': v for k, v in sd.items()}}, path)
    elif layout == 'no_num_batches_tracked':
        torch.save({k: v for k, v in sd.items() if not k.endswith('num_batches_tracked')}, path)
    elif layout == 'safetensors':
        path = tmp_path / 'ckpt.safetensors'
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif layout == 'extra_metadata':
        torch.save({'model': sd, 'epoch': 299, 'max_accuracy': 77.03}, path)
    else:
        torch.save(sd, path)
    model = _fresh()
    report = load_checkpoint(model, path)
    assert report['missing_keys'] == [] and report['unexpected_keys'] == []
    assert report['converted'] is None and report['dropped'] == []
    _check(model, source)


@pytest.mark.parametrize('old_layout', [False, True])
def test_deploy_form(tmp_path, source, old_layout):
    sd = source['deploy_sd']
    if old_layout:
        sd = _old_deploy_layout(sd)
        assert 'stages.1.0.dwconv.weight' in sd and 'stages.1.0.dwconv.lk_origin.weight' not in sd
    path = tmp_path / 'deploy.pth'
    torch.save({'model': sd}, path)
    model = _fresh(deploy=True)
    report = load_checkpoint(model, path)
    assert bool(report['renamed']) == old_layout
    _check(model, source)
    with pytest.raises(ValueError, match='deploy=True'):
        load_checkpoint(_fresh(), path)


def test_training_file_into_deploy_model(tmp_path, source):
    path = tmp_path / 'train.pth'
    torch.save({'model': source['train_sd']}, path)
    model = _fresh(deploy=True)
    report = load_checkpoint(model, path)
    assert report['converted'] == 'train->deploy'
    assert model.deploy and 'stages.0.0.pwconv2.0.bias' in model.state_dict()
    _check(model, source)


def test_in_chans_3_to_1(tmp_path, source, caplog):
    path = tmp_path / 'ckpt.pth'
    torch.save(source['train_sd'], path)
    model = _fresh(in_chans=1)
    with caplog.at_level(logging.INFO, logger=C.__name__):
        report = load_checkpoint(model, path)
    assert report['adapted_in_chans'] == (3, 1)
    assert any('input channels' in r.getMessage() for r in caplog.records)
    stem = source['train_sd']['downsample_layers.0.0.weight']
    assert torch.allclose(model.state_dict()['downsample_layers.0.0.weight'], stem.sum(1, keepdim=True))
    x1 = source['x'][:, :1]
    with torch.no_grad():
        assert rel_err(model(x1), source['model'](x1.expand(-1, 3, -1, -1))) <= TOL
    # also through the deploy conversion path
    model = _fresh(in_chans=1, deploy=True)
    report = load_checkpoint(model, path)
    assert report['adapted_in_chans'] == (3, 1) and report['converted'] == 'train->deploy'
    with torch.no_grad():
        assert rel_err(model(x1), source['model'](x1.expand(-1, 3, -1, -1))) <= TOL


@pytest.mark.parametrize('num_classes', [0, 5])
def test_head_mismatch_dropped(tmp_path, source, num_classes, caplog):
    path = tmp_path / 'ckpt.pth'
    torch.save(source['train_sd'], path)
    model = _fresh(num_classes=num_classes)
    with caplog.at_level(logging.INFO, logger=C.__name__):
        report = load_checkpoint(model, path)
    assert sorted(report['dropped']) == ['head.bias', 'head.weight']
    assert any('Dropped' in r.getMessage() for r in caplog.records)
    _check(model, source, key='pre')  # everything up to the classifier loaded
    if num_classes:
        assert model(source['x']).shape == (2, num_classes)


def test_dense_form_checkpoint(tmp_path, source):
    """The dense-task layout: norm0..norm3 on the stage outputs, no final norm / head."""
    sd = {k: v for k, v in source['train_sd'].items() if not k.startswith(('norm.', 'head.'))}
    g = torch.Generator().manual_seed(0)
    for i, c in enumerate((16, 32, 64, 128)):
        sd[f'norm{i}.weight'] = torch.rand(c, generator=g) + 0.5
        sd[f'norm{i}.bias'] = torch.randn(c, generator=g)
    path = tmp_path / 'dense.pth'
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in sd.items()}}, path)
    model = _fresh(dense_norms=True, num_classes=0)
    report = load_checkpoint(model, path)
    assert report['kept_from_model'] == ['norm.weight', 'norm.bias']
    assert torch.equal(model.norm3.weight, sd['norm3.weight'])
    with torch.no_grad():
        feats = model.forward_intermediates(source['x'], intermediates_only=True)
        ref = source['model'].forward_features(source['x'])
    expected = torch.nn.functional.layer_norm(
        ref.permute(0, 2, 3, 1), (128,), sd['norm3.weight'], sd['norm3.bias'], eps=1e-6).permute(0, 3, 1, 2)
    assert rel_err(feats[3], expected) <= TOL
    # a plain model simply drops the dense norms
    report = load_checkpoint(_fresh(), path)
    assert sorted(report['dropped']) == [f'norm{i}.{p}' for i in range(4) for p in ('bias', 'weight')]


def test_unsafe_pickle_refused(tmp_path, source):
    path = tmp_path / 'evil.pth'
    torch.save({'model': source['train_sd'], 'args': NotATensor()}, path)
    with pytest.raises(ValueError, match='refusing'):
        load_checkpoint(_fresh(), path)
    path = tmp_path / 'not_tensors.pth'
    torch.save({'model': {'downsample_layers.0.0.weight': 'nope'}}, path)
    with pytest.raises(C.CheckpointError, match='not_tensors.pth: state dict entries are not tensors'):
        load_checkpoint(_fresh(), path)


def test_state_dict_object_and_strict(source):
    model = _fresh()
    load_checkpoint(model, {'model': source['train_sd']})
    _check(model, source)
    sd = {k: v for k, v in source['train_sd'].items() if not k.startswith('stages.3.')}
    with pytest.raises(C.CheckpointError, match=r'do not fit the unireplknet_test model .*missing: stages\.3\.'):
        load_checkpoint(_fresh(), sd)
    report = load_checkpoint(_fresh(), sd, strict=False)
    assert report['missing_keys'] and all(k.startswith('stages.3.') for k in report['missing_keys'])


def test_timm_pretrained_local_file(tmp_path):
    """The real users' path (HF download) exercised with a local file in the released layout."""
    torch.manual_seed(0)
    src = randomize_(timm.create_model('unireplknet_a'), seed=7).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        y = src(x)
    path = tmp_path / 'unireplknet_a_in1k_224_acc77.03.pth'
    torch.save({'model': {k: v for k, v in src.state_dict().items() if not k.endswith('num_batches_tracked')}}, path)
    model = timm.create_model('unireplknet_a', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    with torch.no_grad():
        assert rel_err(model(x), y) <= TOL


def test_timm_pretrained_variants(tmp_path, source):
    """Deploy conversion, new head + 1 input channel, features_only - through timm's pretrained loading."""
    path = tmp_path / 'ckpt.pth'
    torch.save({'model': source['train_sd']}, path)
    overlay = dict(file=str(path), num_classes=10)
    x = source['x']
    model = timm.create_model('unireplknet_test', pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10,
                              deploy=True).eval()
    assert model.deploy
    _check(model, source)
    model = timm.create_model('unireplknet_test', pretrained=True, pretrained_cfg_overlay=overlay, in_chans=1,
                              num_classes=0).eval()
    stem = source['train_sd']['downsample_layers.0.0.weight']
    assert torch.allclose(model.downsample_layers[0][0].weight, stem.sum(1, keepdim=True))
    feats = timm.create_model('unireplknet_test', pretrained=True, pretrained_cfg_overlay=overlay,
                              features_only=True).eval()
    with torch.no_grad():
        assert rel_err(feats(x)[-1], source['model'].forward_features(x)) <= TOL


def test_checkpoint_filter_fn_direct(source):
    model = _fresh(deploy=True)
    sd = checkpoint_filter_fn({'model': source['train_sd']}, model)
    model.load_state_dict(sd, strict=True)
    _check(model, source)


def test_timm_load_checkpoint_with_the_filter(tmp_path, source):
    """timm's own loader (weights_only read, one wrapper level) with our layout adaptation as its filter_fn."""
    path = tmp_path / 'train.pth'
    torch.save({'model': {f'module.{k}': v for k, v in source['train_sd'].items()}}, path)
    model = _fresh(deploy=True)
    timm.models.load_checkpoint(model, str(path), filter_fn=checkpoint_filter_fn)
    assert model.deploy
    _check(model, source)


def test_ema_weights_and_nested_wrappers(tmp_path, source):
    """EMA weights on request (else the plain ones), and wrappers deeper than timm's one level."""
    zeros = {k: torch.zeros_like(v) for k, v in source['train_sd'].items()}
    path = tmp_path / 'ema.pth'
    torch.save({'model': source['train_sd'], 'model_ema': zeros}, path)
    model = _fresh()
    load_checkpoint(model, path)
    _check(model, source)
    assert C.read_checkpoint(path, use_ema=True)['head.weight'].abs().sum() == 0
    path = tmp_path / 'nested.pth'
    torch.save({'state_dict': {'module': source['train_sd']}}, path)
    model = _fresh()
    load_checkpoint(model, path)
    _check(model, source)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        load_checkpoint(_fresh(), tmp_path / 'nope.pth')
