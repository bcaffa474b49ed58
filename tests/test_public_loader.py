"""The loader of the public UniRepLKNet file for the side-by-side benchmark rows (benchmarks/public_impl.py).

The public file is not in the repository; these tests use stand-ins with its structure: this project's own model file,
and a small file with the public file's optional imports, prints and factory signature.
"""
import sys
import textwrap
from pathlib import Path

import pytest
import timm
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'benchmarks'))
import public_impl as P  # noqa: E402

from _helpers import randomize_  # noqa: E402

STANDIN = '''
import torch
from timm.models.layers import trunc_normal_, DropPath
from timm.models.registry import register_model
try:
    from mmseg.models.builder import BACKBONES as seg_BACKBONES
    has_mmseg = True
except ImportError:
    has_mmseg = False
try:
    from mmdet.models.builder import BACKBONES as det_BACKBONES
    has_mmdet = True
except ImportError:
    has_mmdet = False
from unimodal.models.unireplknet import UniRepLKNet as _Ours

print('loading the public file')


class UniRepLKNet(_Ours):
    def __init__(self, in_chans=3, num_classes=1000, depths=(3, 3, 27, 3), dims=(96, 192, 384, 768),
                 drop_path_rate=0., layer_scale_init_value=1e-6, head_init_scale=1., kernel_sizes=None, deploy=False,
                 with_cp=False, init_cfg=None, attempt_use_lk_impl=True, use_sync_bn=False, **kwargs):
        if attempt_use_lk_impl:
            try:
                from depthwise_conv2d_implicit_gemm import DepthWiseConv2dImplicitGEMM
            except ImportError:
                DepthWiseConv2dImplicitGEMM = None
            raise RuntimeError('the loader must turn attempt_use_lk_impl off')
        print('---------------- found no iGEMM. use original conv.')
        self.mm = (has_mmseg, has_mmdet)
        super().__init__(in_chans=in_chans, num_classes=num_classes, depths=depths, dims=dims,
                         drop_path_rate=drop_path_rate, layer_scale_init_value=layer_scale_init_value,
                         head_init_scale=head_init_scale, kernel_sizes=kernel_sizes, deploy=deploy,
                         use_sync_bn=use_sync_bn)

    def reparameterize_unireplknet(self):
        print('reparameterizing')
        self.reparameterize()


@register_model
def unireplknet_a(in_1k_pretrained=False, **kwargs):
    assert not in_1k_pretrained
    return UniRepLKNet(depths=(2, 2, 6, 2), dims=(40, 80, 160, 320), **kwargs)
'''


@pytest.fixture
def fake_mm(monkeypatch, tmp_path):
    """An importable 'mmseg' package: the loader must hide it anyway."""
    pkg = tmp_path / 'mmseg' / 'models'
    pkg.mkdir(parents=True)
    (tmp_path / 'mmseg' / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('')
    (pkg / 'builder.py').write_text('BACKBONES = {}\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import mmseg  # noqa: F401  (already imported: the loader must hide sys.modules entries too)
    yield tmp_path
    for k in [k for k in sys.modules if k.split('.')[0] == 'mmseg']:
        del sys.modules[k]


def _check_same_function(public, variant='a'):
    ours = randomize_(timm.create_model(f'unireplknet_{variant}', num_classes=10), seed=3).eval()
    P.copy_weights(ours, public)
    public.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = ours(x)
        assert P.rel_err(public(x), ref) < 1e-5
        P.to_deploy(public)
        assert not any('dil_conv' in k or 'origin_bn' in k for k in public.state_dict())  # really re-parameterized
        assert P.rel_err(public(x), ref) < 1e-4
    return ours


def test_loader_with_the_public_structure(tmp_path, fake_mm):
    path = tmp_path / 'unireplknet.py'
    path.write_text(textwrap.dedent(STANDIN))
    before = timm.models._registry._model_entrypoints['unireplknet_a']
    register = timm.models._registry.register_model
    mod = P.load_public_module(str(path))
    assert 'loading the public file' in mod._load_stdout  # captured, not printed
    # the optional registries were hidden even though mmseg is importable here, and timm's registry is untouched
    assert mod.has_mmseg is False and mod.has_mmdet is False
    assert timm.models._registry._model_entrypoints['unireplknet_a'] is before
    assert timm.models._registry.register_model is register and timm.models.register_model is register
    assert 'mmseg' in sys.modules  # restored after loading
    public = P.build_public(mod, 'a', num_classes=10)
    assert 'found no iGEMM' in public._build_stdout
    _check_same_function(public)


def test_loader_with_our_own_model_file():
    mod = P.load_public_module(str(ROOT / 'unimodal' / 'models' / 'unireplknet.py'), package='unimodal.models')
    public = P.build_public(mod, 'a', num_classes=10)
    assert type(public).__module__ == mod.__name__
    _check_same_function(public)
    with pytest.raises(AttributeError, match="no factory 'unireplknet_zz'"):
        P.build_public(mod, 'zz')


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match='--public'):
        P.load_public_module(str(tmp_path / 'missing.py'))
    bad = tmp_path / 'other.py'
    bad.write_text('x = 1\n')
    with pytest.raises(AttributeError, match='no UniRepLKNet class'):
        P.load_public_module(str(bad))
    small = timm.create_model('unireplknet_test')
    with pytest.raises(ValueError, match='state dicts differ'):
        P.copy_weights(small, timm.create_model('unireplknet_a'))
