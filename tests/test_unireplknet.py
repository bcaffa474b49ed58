"""The UniRepLKNet trunk: variants, layout, re-parameterization, timm integration."""
import re

import pytest
import timm
import torch
from timm.models import get_pretrained_cfg
from timm.optim import param_groups_weight_decay
from timm.utils import reparameterize_model
from torch import nn

from unimodal.models.unireplknet import UniRepLKNet
from _helpers import randomize_, rel_err

TOL = 1e-5


def n_params(model):
    return sum(p.numel() for p in model.parameters())


# (variant, deploy params M, training params M or None) from the reference table
PARAMS = [
    ('a', 4.44, 4.65), ('f', 6.24, None), ('p', 10.74, None), ('n', 18.32, None), ('t', 31.04, 31.69),
    ('s', 55.65, 56.46), ('b', 98.01, None), ('l', 218.45, None), ('xl', 386.53, None),
]


@pytest.mark.parametrize('variant,deploy_m,train_m', PARAMS)
def test_param_counts(variant, deploy_m, train_m):
    m = timm.create_model(f'unireplknet_{variant}', device='meta', deploy=True)
    assert abs(n_params(m) / 1e6 - deploy_m) / deploy_m < 0.005
    if train_m is not None:
        m = timm.create_model(f'unireplknet_{variant}', device='meta')
        assert abs(n_params(m) / 1e6 - train_m) / train_m < 0.005


def test_state_dict_keys_t():
    train = timm.create_model('unireplknet_t', device='meta').state_dict()
    deploy = timm.create_model('unireplknet_t', device='meta', deploy=True).state_dict()
    assert len(train) == 1116
    assert len(deploy) == 321
    for k in [
        'downsample_layers.0.0.weight', 'downsample_layers.0.1.weight', 'downsample_layers.0.3.bias',
        'downsample_layers.0.4.bias', 'downsample_layers.3.0.weight', 'downsample_layers.3.1.bias',
        'stages.0.0.gamma', 'stages.0.0.dwconv.weight', 'stages.0.0.norm.running_var',
        'stages.0.0.norm.num_batches_tracked', 'stages.1.0.dwconv.lk_origin.weight',
        'stages.1.0.dwconv.origin_bn.running_mean', 'stages.1.0.dwconv.dil_conv_k7_2.weight',
        'stages.1.0.dwconv.dil_bn_k3_5.bias', 'stages.2.1.dwconv.weight', 'stages.2.17.dwconv.weight',
        'stages.0.0.se.down.weight', 'stages.0.0.se.up.bias', 'stages.0.0.pwconv1.1.weight',
        'stages.0.0.act.1.gamma', 'stages.0.0.act.1.beta', 'stages.0.0.pwconv2.0.weight',
        'stages.0.0.pwconv2.2.running_mean', 'norm.weight', 'head.bias',
    ]:
        assert k in train, k
    assert 'stages.0.0.pwconv2.0.bias' not in train
    assert train['stages.1.0.dwconv.lk_origin.weight'].shape == (160, 1, 13, 13)
    assert train['stages.0.0.se.down.weight'].shape == (20, 80, 1, 1)
    assert train['stages.0.0.act.1.gamma'].shape == (1, 1, 1, 320)
    assert train['stages.0.0.pwconv1.1.weight'].shape == (320, 80)
    assert train['stages.0.0.pwconv2.0.weight'].shape == (80, 320)
    for k in ['stages.1.0.dwconv.lk_origin.weight', 'stages.1.0.dwconv.lk_origin.bias', 'stages.0.0.dwconv.bias',
              'stages.0.0.pwconv2.0.bias', 'stages.0.0.act.1.gamma', 'stages.0.0.se.down.weight', 'norm.bias']:
        assert k in deploy, k
    bad = re.compile(r'(^stages\.\d+\.\d+\.gamma$|\.norm\.|origin_bn|dil_|act\.1\.beta|pwconv2\.2)')
    assert not [k for k in deploy if bad.search(k)]


def test_default_kernel_sizes():
    m = timm.create_model('unireplknet_t', device='meta')
    assert m.kernel_sizes[2][:4] == (13, 3, 13, 3)
    m = timm.create_model('unireplknet_s', device='meta')
    assert m.kernel_sizes[2][:6] == (13, 3, 3, 13, 3, 3) and m.kernel_sizes[3] == (13, 13, 13)
    with pytest.raises(ValueError, match='kernel_sizes'):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
    m = UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), kernel_sizes=(3, 7, 0, 5), num_classes=3).eval()
    assert m(torch.randn(1, 3, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize('name,size', [('unireplknet_test', 64), ('unireplknet_test_k17', 64), ('unireplknet_a', 32)])
def test_model_reparam_equivalence(name, size):
    torch.manual_seed(0)
    model = randomize_(timm.create_model(name), seed=1).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        before = model(x)
        feats = model.forward_features(x)
        via_timm = reparameterize_model(model)  # a deep copy
        assert rel_err(via_timm(x), before) <= TOL
        model.reparameterize()
        assert model.deploy
        assert rel_err(model(x), before) <= TOL
        assert rel_err(model.forward_features(x), feats) <= TOL
    assert via_timm.state_dict().keys() == model.state_dict().keys()
    # a deploy-form build has exactly the converted structure
    deploy = timm.create_model(name, deploy=True, device='meta').eval()  # meta: skip the random init
    deploy.load_state_dict(model.state_dict(), strict=True, assign=True)
    with torch.no_grad():
        assert rel_err(deploy(x), before) <= TOL


def test_forward_api():
    m = timm.create_model('unireplknet_test', num_classes=7).eval()
    x = torch.randn(2, 3, 64, 64)
    f = m.forward_features(x)
    assert f.shape == (2, 128, 2, 2) and m.num_features == 128
    assert m.forward_head(f).shape == (2, 7)
    assert m.forward_head(f, pre_logits=True).shape == (2, 128)
    assert m.get_classifier() is m.head
    m.reset_classifier(0)
    assert isinstance(m.head, nn.Identity) and isinstance(m.norm, nn.LayerNorm)
    assert m(x).shape == (2, 128)
    m0 = timm.create_model('unireplknet_test', num_classes=0)
    sd = m0.state_dict()
    assert isinstance(m0.head, nn.Identity) and 'head.weight' not in sd and 'norm.weight' in sd
    m.reset_classifier(5, global_pool='max')
    assert m(x).shape == (2, 5)


def test_unknown_kwarg_raises():
    with pytest.raises(TypeError, match='drop_path'):
        timm.create_model('unireplknet_test', drop_path=0.1)
    with pytest.raises(TypeError, match='layerscale'):
        UniRepLKNet(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), kernel_sizes=(3, 3, 3, 3), layerscale=0.1)


def test_features_only():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    feat = timm.create_model('unireplknet_test', features_only=True).eval()
    outs = feat(x)
    assert [o.shape[1] for o in outs] == [16, 32, 64, 128] == feat.feature_info.channels()
    assert [64 // o.shape[-1] for o in outs] == [4, 8, 16, 32] == feat.feature_info.reduction()
    sub = timm.create_model('unireplknet_test', features_only=True, out_indices=(1, 2))
    assert [o.shape[1] for o in sub(x)] == [32, 64]
    # timm re-parameterization of the feature extractor
    randomize_(feat, seed=3)
    with torch.no_grad():
        outs = feat(x)
        outs2 = reparameterize_model(feat)(x)
    assert all(rel_err(a, b) <= TOL for a, b in zip(outs2, outs))
    # dense-feature layout: norm0..norm3 on the stage outputs
    dense = timm.create_model('unireplknet_test', features_only=True, dense_norms=True).eval()
    keys = dense.state_dict().keys()
    assert {f'model.norm{i}.weight' for i in range(4)} <= set(keys)
    with torch.no_grad():
        o = dense(x)
    assert abs(o[0].mean(1).mean().item()) < 1e-4  # channel-normalised (LayerNorm weight 1, bias 0 at init)


def test_grad_checkpointing_matches():
    torch.manual_seed(0)
    m = timm.create_model('unireplknet_test').train()
    randomize_(m, seed=2)
    x = torch.randn(2, 3, 32, 32)
    m.zero_grad()
    ref = m(x)
    ref.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    m.zero_grad()
    m.set_grad_checkpointing(True)
    out = m(x)
    out.square().mean().backward()
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-6)
    for n, p in m.named_parameters():
        assert torch.allclose(p.grad, grads[n], rtol=1e-4, atol=1e-7), n


def test_sync_bn():
    m = timm.create_model('unireplknet_test', use_sync_bn=True)
    kinds = {type(x) for x in m.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)}
    assert kinds == {nn.SyncBatchNorm}
    plain = timm.create_model('unireplknet_test')
    assert m.state_dict().keys() == plain.state_dict().keys()
    m.reparameterize()
    assert not [x for x in m.modules() if isinstance(x, nn.modules.batchnorm._BatchNorm)]


def test_init_and_options():
    m = timm.create_model('unireplknet_test', drop_path_rate=0.3, head_init_scale=0.)
    assert float(m.head.weight.detach().abs().max()) == 0.
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0. for s in m.stages for b in s]
    assert rates[0] == 0. and abs(rates[-1] - 0.3) < 1e-6 and rates == sorted(rates)
    assert float(m.stages[0][0].gamma[0].detach()) == pytest.approx(1e-6)
    assert m.stages[0][0].act[1].gamma.abs().max() == 0
    m = timm.create_model('unireplknet_test', layer_scale_init_value=0)
    assert m.stages[0][0].gamma is None


def _conv_linear_weights(m):
    return {n: mod.weight.detach() for n, mod in m.named_modules() if isinstance(mod, (nn.Conv2d, nn.Linear))}


def test_weight_init_published_and_fan_in():
    torch.manual_seed(0)
    published = _conv_linear_weights(timm.create_model('unireplknet_a', num_classes=10))
    big = [w for w in published.values() if w.numel() > 20000]
    assert big and all(abs(float(w.std()) - .02) < .002 for w in big)        # the published std .02 everywhere
    torch.manual_seed(0)
    fan = _conv_linear_weights(timm.create_model('unireplknet_a', num_classes=10, weight_init='fan_in'))
    checked = 0
    for name, w in fan.items():
        if w.numel() > 20000:                                                   # enough samples for a tight std
            want = w[0].numel() ** -0.5
            assert abs(float(w.std()) / want - 1) < 0.05, name
            checked += 1
    assert checked > 10
    dw = fan['stages.0.0.dwconv.weight'] if 'stages.0.0.dwconv.weight' in fan else None
    if dw is not None:                                                          # depthwise: fan-in = k * k
        assert abs(float(dw.std()) - 1 / 3) < 0.1
    with pytest.raises(ValueError, match='weight_init must be one of'):
        timm.create_model('unireplknet_test', weight_init='xavier')


def test_stem_stride_two_halves_every_reduction_and_keeps_the_weights():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    published = timm.create_model('unireplknet_test', features_only=True).eval()
    fine = timm.create_model('unireplknet_test', features_only=True, stem_stride=2).eval()
    assert fine.feature_info.reduction() == [2, 4, 8, 16] and published.feature_info.reduction() == [4, 8, 16, 32]
    assert [tuple(o.shape[-2:]) for o in fine(x)] == [(32, 32), (16, 16), (8, 8), (4, 4)]
    # same parameters, so a published checkpoint loads into either; only the first conv's stride differs
    assert {k: v.shape for k, v in fine.state_dict().items()} == {k: v.shape for k, v in published.state_dict().items()}
    fine.load_state_dict(published.state_dict())
    assert [c.stride for c in fine.model.downsample_layers[0] if isinstance(c, nn.Conv2d)] == [(1, 1), (2, 2)]
    # the fast path (chunked stem in CPU inference) agrees with the reference math at stride 2 too
    m = timm.create_model('unireplknet_test', num_classes=5, stem_stride=2).eval()
    randomize_(m, seed=1)
    with torch.no_grad():
        fast = m(x)
        m.set_fast_path(False)
        assert rel_err(fast, m(x)) <= TOL
    # the re-parameterized form computes the same function
    with torch.no_grad():
        out = m(x)
        m.reparameterize()
        assert rel_err(m(x), out) <= TOL
    for bad in (3, 1, True, '2'):
        with pytest.raises(ValueError, match='stem_stride must be one of'):
            timm.create_model('unireplknet_test', stem_stride=bad)


def test_param_groups():
    m = timm.create_model('unireplknet_test')
    nwd = m.no_weight_decay()
    assert 'stages.0.0.act.1.gamma' in nwd and 'stages.0.0.gamma' in nwd
    groups = param_groups_weight_decay(m, 0.05, no_weight_decay_list=nwd)
    assert sum(len(g['params']) for g in groups) == len(list(m.parameters()))
    from timm.models import group_parameters
    grouping = group_parameters(m, m.group_matcher())
    assert len(grouping) >= 5


def test_pretrained_cfgs():
    cfg = get_pretrained_cfg('unireplknet_a.in1k')
    assert cfg.hf_hub_id == 'DingXiaoH/UniRepLKNet'
    assert cfg.hf_hub_filename == 'unireplknet_a_in1k_224_acc77.03.pth'
    assert cfg.input_size == (3, 224, 224) and cfg.num_classes == 1000
    cfg = get_pretrained_cfg('unireplknet_xl.in22k')
    assert cfg.num_classes == 21841 and cfg.hf_hub_filename == 'unireplknet_xl_in22k_pretrain.pth'
    cfg = get_pretrained_cfg('unireplknet_b.in22k_ft_in1k_384')
    assert cfg.input_size == (3, 384, 384)
    assert cfg.hf_hub_filename == 'unireplknet_b_in22k_to_in1k_384_acc87.40.pth'
    names = timm.list_models('unireplknet_*')
    for v in ['a', 'f', 'p', 'n', 't', 's', 'b', 'l', 'xl', 'test']:
        assert f'unireplknet_{v}' in names
