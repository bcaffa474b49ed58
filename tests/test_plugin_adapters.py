"""Example plug-in adapters in adapters/: file-path route, entry-point route, and a few training steps.

The entry-point route is exercised as an installed distribution would be seen: a ``*.dist-info`` folder with
an ``entry_points.txt`` generated from ``adapters/ecg/pyproject.toml`` is put on ``sys.path`` together with the
module's folder, and ``importlib.metadata`` discovers it for real (no monkeypatched lookup).
"""
import ast
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unimodal
from unimodal.modalities import base as adapter_base

REPO = Path(__file__).resolve().parents[1]
ECG_FILE = REPO / 'adapters' / 'ecg' / 'unimodal_ecg_adapter.py'
IMU_FILE = REPO / 'adapters' / 'imu_activity' / 'imu_adapter.py'
ECG_SPEC = f'{ECG_FILE}:ECGAdapter'
IMU_SPEC = f'{IMU_FILE}:IMUAdapter'

PUBLIC_API = {'Adapter', 'register_adapter', 'create_model', 'InputShapeError', 'get_adapter_class'}


@pytest.fixture()
def clean_registry(monkeypatch):
    """A registry without the example names, restored afterwards (routes must not see each other's classes)."""
    monkeypatch.setattr(adapter_base, '_ADAPTERS',
                        {k: v for k, v in adapter_base._ADAPTERS.items() if k not in ('ecg', 'imu')})
    monkeypatch.delitem(sys.modules, 'unimodal_ecg_adapter', raising=False)


def _batch(cls, n=10, seed=0):
    ds = cls.make_datasets()['train']
    idx = np.random.default_rng(seed).choice(len(ds), n, replace=False)
    xs, ys = zip(*(ds[int(i)] for i in idx))
    return torch.stack(xs), torch.tensor(ys)


@pytest.mark.parametrize('path', [ECG_FILE, IMU_FILE])
def test_examples_use_only_public_api(path):
    tree = ast.parse(path.read_text())
    allowed_modules = {'unimodal', 'torch', 'torch.nn', 'torch.nn.functional', 'torch.utils.data', 'numpy',
                       'typing', 'pathlib', 'math', '__future__'}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert {a.name for a in node.names} <= allowed_modules, ast.dump(node)
        elif isinstance(node, ast.ImportFrom):
            assert node.module in allowed_modules and node.module != 'unimodal', ast.dump(node)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == 'unimodal':
            assert node.attr in PUBLIC_API, f'{path.name} uses unimodal.{node.attr}'
    assert not (REPO / 'adapters' / '__init__.py').exists()  # not a package named `adapters`


@pytest.mark.parametrize('spec, kwargs, x_shape, grid_shape', [
    (ECG_SPEC, {}, (2, 3, 1000), (2, 3, 33, 63)),
    (ECG_SPEC, {'leads': 12, 'n_fft': 32, 'hop': 8}, (2, 12, 500), (2, 12, 17, 63)),
    (IMU_SPEC, {}, (2, 128, 6), (2, 6, 32, 32)),
    (IMU_SPEC, {'mode': 'recurrence', 'image_size': 24}, (2, 128, 6), (2, 6, 24, 24)),
])
def test_file_route_shapes_and_gradients(clean_registry, spec, kwargs, x_shape, grid_shape):
    cls = unimodal.get_adapter_class(spec)
    assert issubclass(cls, unimodal.Adapter) and cls.num_classes == 5
    model = unimodal.create_model(cls(**kwargs), variant='unireplknet_test', num_classes=cls.num_classes)
    x = torch.randn(*x_shape)
    grid, _ = model.adapter(x)
    assert grid.shape == grid_shape
    out = model(x)
    assert out.shape == (2, 5)
    out.sum().backward()
    assert model.adapter.norm.weight.grad is not None and model.adapter.norm.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('spec, bad, match', [
    (ECG_SPEC, torch.randn(3, 1000), 'add a batch dimension'),
    (ECG_SPEC, torch.randn(2, 1000, 3), 'samples-first'),
    (ECG_SPEC, torch.randn(2, 3, 50), 'at least'),
    (IMU_SPEC, torch.randn(2, 6, 128), 'channels-first'),
    (IMU_SPEC, torch.randn(2, 128, 3), 'expected 6 sensor channels'),
])
def test_wrong_input_is_clear(clean_registry, spec, bad, match):
    cls = unimodal.get_adapter_class(spec)
    model = unimodal.create_model(spec, variant='unireplknet_test', num_classes=5)
    with pytest.raises(unimodal.InputShapeError, match=match) as info:
        model(bad)
    assert str(tuple(bad.shape)) in str(info.value)
    assert cls.input_desc in str(info.value)


@pytest.mark.parametrize('spec', [ECG_SPEC, IMU_SPEC])
def test_reparameterize_keeps_outputs(clean_registry, spec):
    torch.manual_seed(0)
    cls = unimodal.get_adapter_class(spec)
    model = unimodal.create_model(spec, variant='unireplknet_test', num_classes=5)
    x, _ = _batch(cls, 4)
    model.train()
    with torch.no_grad():
        model(x)  # gives the BatchNorms (adapter and trunk) real running statistics
    model.eval()
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    assert (after - before).norm() / before.norm() < 1e-5


def test_synthetic_sets_are_deterministic_and_balanced(clean_registry):
    for spec in (ECG_SPEC, IMU_SPEC):
        cls = unimodal.get_adapter_class(spec)
        a, b = cls.make_datasets(), cls.make_datasets()
        assert set(a) == {'train', 'val', 'test'}
        x1, y1 = a['train'][7]
        x2, y2 = b['train'][7]
        assert torch.equal(x1, x2) and y1 == y2
        assert not torch.equal(a['train'][0][0], a['val'][0][0])  # splits hold different records
        counts = np.bincount(a['train'].targets, minlength=cls.num_classes)
        assert counts.min() == counts.max()
        # evenly spaced subsets (the engine's data.limit_train) must still see several classes
        assert len(set(a['train'].targets[::5])) > 1


def test_ecg_reads_user_npz(clean_registry, tmp_path):
    cls = unimodal.get_adapter_class(ECG_SPEC)
    x = np.random.default_rng(0).normal(size=(6, 3, 400)).astype(np.float32)
    np.savez(tmp_path / 'train.npz', x=x, y=np.array([0, 1, 2, 0, 1, 2]))
    sets = cls.make_datasets(tmp_path)
    assert set(sets) == {'train'} and len(sets['train']) == 6 and sets['train'].classes == ['0', '1', '2']
    xi, yi = sets['train'][4]
    assert torch.equal(xi, torch.from_numpy(x[4])) and yi == 1


def _install_fake_distribution(tmp_path: Path, monkeypatch) -> None:
    """What `pip install adapters/ecg` leaves on sys.path: the module and a dist-info with entry_points.txt."""
    project = tomllib.loads((REPO / 'adapters' / 'ecg' / 'pyproject.toml').read_text())['project']
    site = tmp_path / 'site-packages'
    dist = site / f'{project["name"].replace("-", "_")}-{project["version"]}.dist-info'
    dist.mkdir(parents=True)
    (dist / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: {project["name"]}\nVersion: {project["version"]}\n')
    lines = []
    for group, eps in project['entry-points'].items():
        lines.append(f'[{group}]')
        lines += [f'{name} = {value}' for name, value in eps.items()]
    (dist / 'entry_points.txt').write_text('\n'.join(lines) + '\n')
    (site / 'unimodal_ecg_adapter.py').write_text(ECG_FILE.read_text())
    monkeypatch.syspath_prepend(str(site))


def test_entry_point_route_builds_and_trains(clean_registry, tmp_path, monkeypatch):
    _install_fake_distribution(tmp_path, monkeypatch)
    assert 'ecg' not in adapter_base._ADAPTERS
    assert 'ecg' in unimodal.list_adapters()  # offered by the installed entry point
    cls = unimodal.get_adapter_class('ecg')
    assert cls.__module__ == 'unimodal_ecg_adapter'  # loaded through the entry point, not the file route
    assert Path(sys.modules['unimodal_ecg_adapter'].__file__).parent == tmp_path / 'site-packages'

    torch.manual_seed(0)
    model = unimodal.create_model('ecg', variant='unireplknet_test', num_classes=cls.num_classes)
    x, y = _batch(cls, 8)
    losses = _fit(model, x, y, steps=8)
    assert losses[-1] < 0.7 * losses[0], losses


def _fit(model, x, y, steps):
    """A plain loop on one fixed batch (overfitting it is the point: the loss must fall)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_imu_file_route_trains_plain_loop(clean_registry):
    torch.manual_seed(0)
    cls = unimodal.get_adapter_class(IMU_SPEC)
    model = unimodal.create_model(cls(rotate=False), variant='unireplknet_test', num_classes=cls.num_classes)
    x, y = _batch(cls, 8)
    before = model.adapter.norm.weight.detach().clone()
    losses = _fit(model, x, y, steps=8)
    assert losses[-1] < 0.7 * losses[0], losses
    assert not torch.equal(before, model.adapter.norm.weight)


def test_cli_train_with_file_adapter(clean_registry, tmp_path, monkeypatch):
    """`unimodal train --adapter file.py:Class` without --task: the adapter brings its own data."""
    from unimodal.cli import main
    monkeypatch.setenv('UNIMODAL_CACHE', str(tmp_path / 'cache'))
    out = tmp_path / 'run'
    rc = main(['train', '--adapter', ECG_SPEC, '--epochs', '1', '--batch-size', '10', '--out', str(out),
               '--no-progress', '--set', 'data.limit_train=20', '--set', 'data.limit_eval=10'])
    assert rc == 0
    results = json.loads((out / 'results.json').read_text())
    entry = results['tasks']['ecg']
    assert entry['num_samples'] == 10 and 0 <= entry['metrics']['top1'] <= 100
    ckpt = torch.load(out / 'best.pt', map_location='cpu', weights_only=True)
    weights = {k: v for k, v in ckpt['model'].items() if k.endswith('ecg.norm.weight')}
    assert weights, sorted(ckpt['model'])[:10]
    # the adapter's learnable part was trained (it starts at ones)
    assert not torch.equal(next(iter(weights.values())), torch.ones(3))
