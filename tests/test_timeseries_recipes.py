"""The time-series recipes hold the published values (configs/weather_global_{temp,wind}.yaml against the released
UniRepLKNet Time-Series scripts and code; configs/weather_tslib.yaml against Time-Series-Library). Every check
reads the recipe file, so a recipe cannot drift from what is published."""
from pathlib import Path

import pytest
import torch
from torch import nn

from unimodal import create_model
from unimodal.config import load_config_file, resolve_run_config
from unimodal.engine.optim import create_schedule
from unimodal.models.corrformer import CorrformerHead

CONFIGS = Path(__file__).resolve().parent.parent / 'configs'
GLOBAL = ['weather_global_temp', 'weather_global_wind']
STAGE_3_KERNELS = [13, 3, 3] * 9  # the original's default_kernel_sizes, stage 3


def recipe(name):
    return resolve_run_config(load_config_file(name))


def type1_lrs(base, epochs):
    """The published lr per epoch: ``adjust_learning_rate(optimizer, epoch + 1, args)`` after every epoch with
    ``lradj='type1'``: ``lr = base * 0.5 ** ((epoch - 1) // 1)`` (utils/tools.py; TSLib's is the same)."""
    lr, out = base, []
    for epoch in range(epochs):
        out.append(lr)
        called_with = epoch + 1
        lr = base * 0.5 ** ((called_with - 1) // 1)
    return out


def engine_lrs_per_epoch(cfg, steps_per_epoch=3):
    t = cfg.train
    opt = torch.optim.Adam([nn.Parameter(torch.zeros(1))], lr=t.lr)
    sched = create_schedule(opt, schedule=t.schedule, epochs=t.epochs, steps_per_epoch=steps_per_epoch,
                            warmup_epochs=t.warmup_epochs, min_lr=t.min_lr, step_size=t.step_size, gamma=t.gamma,
                            step_start=t.step_start)
    per_epoch = []
    for _ in range(t.epochs):
        lrs = []
        for _ in range(steps_per_epoch):
            lrs.append(sched.get_last_lr()[0])
            sched.step()
        assert len(set(lrs)) == 1  # constant within an epoch, as the per-epoch original
        per_epoch.append(lrs[0])
    return per_epoch


@pytest.mark.parametrize('name', GLOBAL + ['weather_tslib'])
def test_type1_schedule(name):
    cfg = recipe(name)
    assert cfg.train.lr == 1e-4 and cfg.train.epochs == 10 and cfg.train.optimizer == 'adam'
    assert cfg.train.weight_decay == 0.0 and cfg.train.loss == 'mse'
    got = engine_lrs_per_epoch(cfg)
    assert got == pytest.approx(type1_lrs(1e-4, 10), rel=1e-12)
    assert got[:3] == pytest.approx([1e-4, 1e-4, 5e-5])  # two epochs at the base lr, then halved


@pytest.mark.parametrize('name', GLOBAL)
def test_global_recipe_is_the_published_set_up(name):
    cfg = recipe(name)
    raw = load_config_file(name)
    opts = cfg.data.options
    assert opts['variable'] == name.rsplit('_', 1)[1]
    assert (opts['input_len'], opts['horizon'], opts['stride']) == (48, 24, 1)
    assert opts['marks'] is True and opts['freq'] == 'h' and opts['coords'] == 'stations_sorted.npy'
    assert cfg.model.variant == 'unireplknet_s' and cfg.model.drop_path_rate == 0.4
    kernels = cfg.model.trunk['kernel_sizes']
    assert kernels == [[3, 3, 3], [13, 13, 13], STAGE_3_KERNELS, [11, 11, 11]]
    assert cfg.train.grad_checkpointing is True  # with_cp
    a = cfg.model.adapter
    assert (a['mode'], a['embed_dim'], a['group_size'], a['affine']) == ('paper', 768, 11, 'group')
    assert a['pos_embed'] is False and a['series_embed'] is False and a['embed_dropout'] == 0.05
    assert a['forecaster'] == 'corrformer'
    assert a['forecaster_options'] == {
        'label_len': 24, 'n_heads': 16, 'd_ff': 2048, 'layers': 1, 'node_list': [7, 50], 'moving_avg': 25,
        'factor_temporal': 1, 'factor_spatial': 1, 'tcn_layers': 1, 'dropout': 0.05, 'causal_dropout': 0.2,
        'activation': 'gelu'}
    assert cfg.train.batch_size == 1 and cfg.eval.batch_size == 1
    assert cfg.train.warmup_epochs == 0 and cfg.train.clip_grad is None and cfg.train.mixup == 0
    # the kept differences are named in the recipe's comment
    head = (CONFIGS / f'{name}.yaml').read_text().split('task:')[0]
    for named in ('Deviations', 'early stopping', 'cross input'):
        assert named in head, named
    assert raw['train']['amp'] == 'none'  # fp32, as published


@pytest.mark.parametrize('name', GLOBAL)
def test_global_recipe_builds_the_published_model(name):
    """The model the recipe describes, for the release's 3,850 stations with 4 calendar features and 3 coordinates
    (built on the meta device: no memory, no time)."""
    cfg = recipe(name)
    with torch.device('meta'):
        m = create_model('timeseries', cfg.model.variant, input_len=48, horizon=24, num_series=3850, mark_dim=4,
                         coord_dim=3, drop_path_rate=cfg.model.drop_path_rate, trunk_kwargs=dict(cfg.model.trunk),
                         trunk_chunk=cfg.model.trunk_chunk, **cfg.model.adapter)
    a = m.adapter
    assert (a.num_views, a.series_per_view, a.out_chans, a.image_size) == (350, 11, 1, (192, 192))
    assert m.trunk.downsample_layers[0][0].in_channels == 1
    assert m.trunk.stages[3][0].dwconv.lk_origin.kernel_size == (11, 11)
    assert m.trunk.stages[3][2].drop_path.drop_prob == pytest.approx(0.4)  # linspace up to 0.4
    assert isinstance(m.head, CorrformerHead) and m.head.node_list == [7, 50] and m.head.label_len == 24
    counts = {k: sum(p.numel() for p in getattr(m, k).parameters()) for k in ('adapter', 'trunk', 'head')}
    assert counts == {'adapter': 54_550, 'trunk': 55_520_952, 'head': 76_404_491}


def test_tslib_recipe_keeps_its_set_up():
    cfg = recipe('weather_tslib')
    assert cfg.data.options == {'input_len': 96, 'horizon': 96, 'stride': 1}
    assert cfg.train.batch_size == 32 and cfg.train.step_start == 2
    assert cfg.model.adapter['mode'] == 'grid'
