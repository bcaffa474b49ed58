"""Effective receptive field tool: the gradient map is exact, the area ratio follows its definition, large kernels
give a larger ERF than 3x3 ones at random init, heat maps are written without touching matplotlib's backend, task
models are measured on their adapter's grid, and ``unimodal analyze erf`` runs end to end with clear errors."""
import argparse
import json
import sys

import pytest
import torch
from torch import nn

from unimodal.analysis import adapter_grid, area_ratios, erf_map, log_scale, save_comparison, save_heatmap
from unimodal.analysis import task_model_erf
from unimodal.analysis.erf_cli import add_erf_arguments, run_erf
from unimodal.analysis.erf_inputs import image_folder_inputs, noise_inputs, task_inputs
from unimodal.analysis.erf_models import ErfSubject, build_random_trunk, measure_subjects, parse_model_spec
from unimodal.config import ConfigError


# ------------------------------------------------------------------------------------------------ erf_map

def _conv(kernel: torch.Tensor) -> nn.Conv2d:
    k = kernel.shape[-1]
    conv = nn.Conv2d(1, 1, k, padding=k // 2, bias=True)
    with torch.no_grad():
        conv.weight.copy_(kernel.view(1, 1, k, k))
        conv.bias.fill_(100.)  # the centre stays positive, so its ReLU passes the gradient
    return conv.eval()


def test_erf_map_of_one_conv_is_its_kernel_at_the_centre():
    g = torch.Generator().manual_seed(0)
    kernel = torch.randn(5, 5, generator=g)
    conv = _conv(kernel)
    x = torch.rand(3, 1, 11, 11, generator=g)
    expected = torch.zeros(11, 11)
    expected[3:8, 3:8] = kernel.relu()
    assert torch.allclose(erf_map(conv, x), expected, atol=1e-6)
    expected[3:8, 3:8] = kernel.abs()
    assert torch.allclose(erf_map(conv, x, gradient='abs', batch_size=2), expected, atol=1e-6)


def test_erf_map_does_not_depend_on_batching_and_averages_over_inputs():
    trunk = build_random_trunk('unireplknet_test', seed=1)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    one = erf_map(trunk.forward_features, x, batch_size=1)
    three = erf_map(trunk.forward_features, x, batch_size=3)
    assert torch.allclose(one, three, rtol=1e-4, atol=1e-7)
    parts = torch.stack([erf_map(trunk.forward_features, x[i:i + 1]) for i in range(3)]).mean(0)
    assert torch.allclose(one, parts, rtol=1e-4, atol=1e-7)


def test_erf_map_refuses_training_mode_and_non_maps():
    trunk = build_random_trunk('unireplknet_test').train()
    with pytest.raises(ValueError, match='training mode'):
        erf_map(trunk.forward_features, torch.randn(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\) feature map'):
        erf_map(lambda x: x.mean((2, 3)), torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match='non-finite gradient for input'):
        erf_map(lambda x: x * float('nan'), torch.randn(2, 1, 8, 8))


# ------------------------------------------------------------------------------------------------ area_ratios

def test_area_ratio_of_a_centre_delta_is_one_pixel():
    m = torch.zeros(21, 21)
    m[10, 10] = 5.
    assert area_ratios(m) == {t: pytest.approx(1 / 21 ** 2) for t in (0.2, 0.3, 0.5, 0.99)}


@pytest.mark.parametrize('log', [True, False])
def test_area_ratio_of_a_uniform_map_is_about_the_threshold(log):
    n = 101
    got = area_ratios(torch.full((n, n), 0.3), (0.2, 0.3, 0.5, 0.99, 1.0), log=log)
    for t, r in got.items():
        side = next(s for s in range(1, n + 1, 2) if s * s >= t * n * n - 1e-6)  # smallest odd square holding t
        assert r == pytest.approx(side * side / n ** 2)
        assert t <= r < t + 0.03


def test_area_ratio_grows_with_the_spread_and_clips_to_non_square_maps():
    yy, xx = torch.meshgrid(torch.arange(41.), torch.arange(41.), indexing='ij')
    narrow, wide = [torch.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / (2 * s * s)) for s in (2., 8.)]
    assert all(area_ratios(wide)[t] > area_ratios(narrow)[t] for t in (0.2, 0.3, 0.5, 0.99))
    flat = torch.ones(5, 11)  # squares leave the short side after side 5: clipped, the whole map at the end
    assert area_ratios(flat, (1.0,))[1.0] == 1.0
    assert area_ratios(flat, (0.4,))[0.4] == pytest.approx(5 * 5 / 55)


def test_area_ratio_errors():
    with pytest.raises(ValueError, match='all zero'):
        area_ratios(torch.zeros(5, 5))
    with pytest.raises(ValueError, match='non-negative'):
        area_ratios(-torch.ones(5, 5))
    with pytest.raises(ValueError, match='2-D'):
        area_ratios(torch.ones(1, 5, 5))
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        area_ratios(torch.ones(5, 5), (0.,))


def test_log_scale_is_the_published_heatmap_scale():
    m = torch.tensor([[0., 9.], [99., 999.]])
    assert torch.allclose(log_scale(m), torch.tensor([[0., 1 / 3], [2 / 3, 1.]]))


# ------------------------------------------------------------------------------------------------ the paper's claim

def _kernel_pair(init: str, size: int = 128):
    src = noise_inputs(4, size, seed=0)
    subjects = [ErfSubject(s, build_random_trunk(s, init=init, seed=0)) for s in ('unireplknet_a', 'unireplknet_a:k3')]
    maps = measure_subjects(subjects, src.inputs, src.adapter, batch_size=4)
    return [area_ratios(maps[s.label]) for s in subjects]


def test_13x13_kernels_have_a_larger_erf_than_3x3_at_random_init():
    large, small = _kernel_pair('fan_in')
    # measured: r(20 %) 0.171 vs 0.093, r(30 %) 0.274 vs 0.147, r(50 %) 0.462 vs 0.291 (128 px, 4 noise images)
    for t in (0.2, 0.3, 0.5):
        assert large[t] > 1.5 * small[t], (t, large[t], small[t])


def test_own_init_hides_the_kernel_size():
    # UniRepLKNet's own init (layer scale 1e-6): blocks are ~identity, so both ERFs are the stem's: the covering
    # squares agree within one step (2 px of side at 128 px; the stems' random weights differ)
    large, small = _kernel_pair('model')
    for t in (0.2, 0.3, 0.5):
        assert abs(large[t] ** 0.5 - small[t] ** 0.5) * 128 <= 2 + 1e-6, (t, large[t], small[t])


def test_kernel_spec_builds_the_same_network_with_other_kernels():
    a = build_random_trunk('unireplknet_a', seed=3)
    a3 = build_random_trunk('unireplknet_a:k3', seed=3)
    assert a.kernel_sizes == ((3, 3), (13, 13), (13,) * 6, (13, 13))
    assert a3.kernel_sizes == ((3, 3),) + ((3, 3), (3,) * 6, (3, 3))
    for p, q in zip(a.downsample_layers.parameters(), a3.downsample_layers.parameters()):
        assert torch.equal(p, q)  # same seed: same stem and downsamplers, only the blocks differ
    assert not any(m.training for m in a.modules())
    assert parse_model_spec('resnet50') == ('resnet50', None)
    with pytest.raises(ConfigError, match='not a UniRepLKNet'):
        parse_model_spec('resnet50:k3')
    with pytest.raises(ConfigError, match="unknown timm model 'unireplknet_q'"):
        parse_model_spec('unireplknet_q')


# ------------------------------------------------------------------------------------------------ heat maps

def test_heatmaps_are_written_and_leave_the_backend_alone(tmp_path):
    import matplotlib
    from PIL import Image
    before = dict.__getitem__(matplotlib.rcParams, 'backend')  # the raw value: reading it must not resolve it
    had_pyplot = 'matplotlib.pyplot' in sys.modules
    one, two = tmp_path / 'one.png', tmp_path / 'sub' / 'two.png'
    m = torch.rand(40, 40, generator=torch.Generator().manual_seed(0))
    save_heatmap(m, one, title='one', ratios={0.2: 0.1})
    save_comparison({'a': m, 'b': m.sqrt()}, two, ratios={'a': {0.2: 0.1}}, title='two')
    assert dict.__getitem__(matplotlib.rcParams, 'backend') is before
    assert had_pyplot or 'matplotlib.pyplot' not in sys.modules
    for path in (one, two):
        with Image.open(path) as img:
            assert img.format == 'PNG' and img.width > 200
    with Image.open(two) as a, Image.open(one) as b:
        assert a.width > 1.5 * b.width  # two panels side by side
    assert sorted(p.name for p in tmp_path.rglob('*.png')) == ['one.png', 'two.png']  # no temporary file left
    with pytest.raises(ValueError, match='ending in .png'):
        save_heatmap(m, tmp_path / 'x.jpg')
    assert not (tmp_path / 'x.jpg').exists()


# -------------------------------------------------------------------------------------- inputs and task models

def test_task_model_erf_is_taken_on_the_adapter_grid():
    import unimodal
    src = task_inputs('audio', 2)
    model = unimodal.create_model('audio', variant='unireplknet_test', num_classes=8, mode='paper')
    grid = adapter_grid(model.adapter, src.inputs)
    assert grid.ndim == 4 and grid.shape[1] == model.adapter.out_chans
    got = task_model_erf(model, src.inputs)
    assert got.shape == grid.shape[-2:] and got.sum() > 0
    assert torch.allclose(got, erf_map(model.trunk.forward_features, grid), rtol=1e-5, atol=1e-8)
    from unimodal.data.inputs import primary
    assert primary(src.inputs).shape[0] == 2 and 'audio' in src.description  # (waveforms, lengths)


def test_image_folder_inputs(tmp_path):
    from PIL import Image
    for i, cls in enumerate(['a', 'a', 'b', 'b']):
        (tmp_path / cls).mkdir(exist_ok=True)
        Image.new('RGB', (50 + i, 40), (i * 40, 10, 200)).save(tmp_path / cls / f'{i}.png')
    src = image_folder_inputs(tmp_path, 2, size=64)
    assert src.inputs.shape == (2, 3, 64, 64) and 0 <= float(src.inputs.min()) <= float(src.inputs.max()) <= 1
    assert src.inputs[0, 0, 0, 0] == 0 and src.inputs[1, 0, 0, 0] == pytest.approx(80 / 255)  # files 0 and 2
    with pytest.raises(ConfigError, match='4 image'):
        image_folder_inputs(tmp_path, 5)
    (tmp_path / 'b' / 'bad.jpg').write_bytes(b'not an image')
    with pytest.raises(Exception, match='bad.jpg'):
        image_folder_inputs(tmp_path, 5)


# ------------------------------------------------------------------------------------------------ CLI handler

def _run(*argv):
    parser = add_erf_arguments(argparse.ArgumentParser(prog='unimodal analyze erf'))
    return run_erf(parser.parse_args([str(a) for a in argv]))


def test_cli_compares_models_and_writes_png_and_json(tmp_path, capsys):
    out, js = tmp_path / 'erf.png', tmp_path / 'erf.json'
    code = _run('--model', 'unireplknet_test', '--model', 'unireplknet_test:k3', '--noise', '--size', '64',
                '--num', '2', '--out', out, '--json', js, '--no-progress', '--device', 'cpu')
    assert code == 0 and out.is_file()
    text = capsys.readouterr().out
    assert 'r(20%)' in text and 'r(99%)' in text and 'unireplknet_test:k3' in text and f'wrote {out}' in text
    report = json.loads(js.read_text())
    assert [m['label'] for m in report['models']] == ['unireplknet_test', 'unireplknet_test:k3']
    assert set(report['models'][0]['ratios']) == {'0.2', '0.3', '0.5', '0.99'}
    assert report['num'] == 2 and report['init'] == 'fan_in' and report['models'][0]['grid'] == [3, 64, 64]


def test_cli_checkpoint_uses_its_task_and_adapter(tmp_path, capsys):
    from conftest import FAST
    from unimodal.cli import main
    assert main(['train', '--task', 'audio', *FAST, '--out', str(tmp_path / 'run')]) == 0
    capsys.readouterr()
    code = _run('--model', 'unireplknet_test', '--checkpoint', tmp_path / 'run' / 'best.pt', '--num', '2',
                '--out', tmp_path / 'erf.png', '--json', tmp_path / 'erf.json', '--no-progress', '--device', 'cpu')
    assert code == 0
    report = json.loads((tmp_path / 'erf.json').read_text())
    assert report['task'] == 'audio' and len(report['models']) == 2
    assert report['models'][0]['grid'] == report['models'][1]['grid']  # both on the audio adapter's grid
    assert report['models'][1]['source'] == str(tmp_path / 'run' / 'best.pt')
    with pytest.raises(ConfigError, match="not 'image'"):
        _run('--checkpoint', tmp_path / 'run' / 'best.pt', '--noise', '--out', tmp_path / 'x.png')


def test_cli_errors_come_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown timm model 'nosuchnet'"):
        _run('--model', 'nosuchnet', '--task', 'audio', '--out', tmp_path / 'a.png')
    with pytest.raises(ConfigError, match='--size applies to --images and --noise'):
        _run('--model', 'unireplknet_test', '--task', 'audio', '--size', '64', '--out', tmp_path / 'a.png')
    with pytest.raises(ConfigError, match='ending in .png'):
        _run('--model', 'unireplknet_test', '--out', tmp_path / 'a.jpg')
    with pytest.raises(ConfigError, match='--data applies to task data'):
        _run('--model', 'unireplknet_test', '--noise', '--data', tmp_path, '--out', tmp_path / 'a.png')
    with pytest.raises(ConfigError, match='at least one --model'):
        _run('--out', tmp_path / 'a.png')
    with pytest.raises(SystemExit):
        _run('--model', 'unireplknet_test', '--images', tmp_path, '--task', 'audio', '--out', tmp_path / 'a.png')
    assert not list(tmp_path.iterdir())
