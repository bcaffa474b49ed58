"""Optimisers, parameter groups, layer decay and lr schedules (unimodal.engine.optim over timm's factories)."""
import io
import math

import pytest
import timm
import torch
from timm.optim import create_optimizer_v2
from torch import nn

from unimodal.engine.multitask import MultiTaskModel
from unimodal.engine.optim import create_optimizer, create_schedule, list_optimizers, param_groups


def published_layer_id(name):
    """``get_num_layer_for_convnext`` of the published fine-tuning code (ConvNeXt / UniRepLKNet optim_factory)."""
    parts = name.split('.')
    if parts[0] == 'downsample_layers':
        return {0: 0, 1: 2, 2: 3, 3: 12}[int(parts[1])]
    if parts[0] == 'stages':
        stage, block = int(parts[1]), int(parts[2])
        if stage in (0, 1):
            return stage + 1
        return 3 + block // 3 if stage == 2 else 12
    return 13


def lrs_of(schedule, n):
    out = []
    for _ in range(n):
        out.append(schedule.get_last_lr()[0])
        schedule.step()
    return out


def sgd(lr=1.0):
    return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)


def task_model(variant='unireplknet_test', **kw):
    trunk = timm.create_model(variant, num_classes=0, **kw)
    return MultiTaskModel(trunk, {'a': nn.Conv2d(1, 3, 1)}, {'a': nn.Linear(trunk.num_features, 5)})


def scales_by_name(model, groups):
    scale = {id(p): (g['lr_scale'], g['weight_decay']) for g in groups for p in g['params']}
    return {n: scale[id(p)] for n, p in model.named_parameters() if id(p) in scale}


# ------------------------------------------------------------------------------------------------ schedules

def test_warmup_cosine_and_step_schedules():
    s = create_schedule(sgd(), schedule='cosine', epochs=3, steps_per_epoch=10, warmup_epochs=1, min_lr=0.1)
    lrs = lrs_of(s, 31)
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert lrs[10] == pytest.approx(1.0) and lrs[20] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 2)))
    assert lrs[30] == pytest.approx(0.1)
    s2 = create_schedule(sgd(), schedule='step', epochs=10, steps_per_epoch=2, step_size=1, gamma=0.5, step_start=2)
    assert lrs_of(s2, 8) == pytest.approx([1, 1, 1, 1, 0.5, 0.5, 0.25, 0.25])
    s2.step()
    state = s2.state_dict()
    s3 = create_schedule(sgd(), schedule='step', epochs=10, steps_per_epoch=2, step_size=1, gamma=0.5, step_start=2)
    s3.load_state_dict(state)
    assert s3.get_last_lr() == s2.get_last_lr()
    s4 = create_schedule(sgd(), schedule='constant', epochs=2, steps_per_epoch=4, warmup_epochs=0.5)
    assert lrs_of(s4, 8) == pytest.approx([0.5, 1, 1, 1, 1, 1, 1, 1])


def test_cosine_equals_the_formula_at_every_step():
    """Warm-up (lr/W ... lr), then the cosine over the remaining updates down to min_lr (the pre-timm numbers)."""
    lr, min_lr, spe, epochs, warm = 3e-3, 1e-5, 7, 5, 1.5
    s = create_schedule(sgd(lr), schedule='cosine', epochs=epochs, steps_per_epoch=spe, warmup_epochs=warm,
                        min_lr=min_lr)
    total, w = spe * epochs, round(warm * spe)
    expected = [lr * (t + 1) / w if t < w else
                min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * min(1.0, (t - w) / (total - w))))
                for t in range(total + 3)]
    assert lrs_of(s, total + 3) == pytest.approx(expected, rel=1e-12)


def test_audio_step_schedule_is_torch_multisteplr_per_epoch():
    """The audio recipe: MultiStepLR(milestones=range(5, 1000), gamma=0.85), stepped per epoch, no warm-up."""
    spe, epochs = 3, 100
    s = create_schedule(sgd(2.5e-4), schedule='step', epochs=epochs, steps_per_epoch=spe, step_size=1, gamma=0.85,
                        step_start=5)
    ref_opt = sgd(2.5e-4)
    ref = torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=list(range(5, 1000)), gamma=0.85)
    for epoch in range(epochs):
        for _ in range(spe):
            assert s.get_last_lr()[0] == pytest.approx(ref.get_last_lr()[0], rel=1e-12), epoch
            s.step()
        ref_opt.step()
        ref.step()


def test_weather_type1_step_start_2():
    s = create_schedule(sgd(), schedule='step', epochs=6, steps_per_epoch=1, step_size=1, gamma=0.5, step_start=2)
    assert lrs_of(s, 6) == pytest.approx([1, 1, 0.5, 0.25, 0.125, 0.0625])


def test_schedule_and_optimizer_state_load_weights_only():
    model = task_model()
    opt = create_optimizer(model, optimizer='lamb', lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    sched = create_schedule(opt, schedule='cosine', epochs=2, steps_per_epoch=3, warmup_epochs=1)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    sched.step()
    buf = io.BytesIO()
    torch.save({'optimizer': opt.state_dict(), 'scheduler': sched.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = create_optimizer(model, optimizer='lamb', lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    sched2 = create_schedule(opt2, schedule='cosine', epochs=2, steps_per_epoch=3, warmup_epochs=1)
    opt2.load_state_dict(state['optimizer'])
    sched2.load_state_dict(state['scheduler'])
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_unknown_schedule_is_an_error():
    with pytest.raises(ValueError, match='unknown schedule'):
        create_schedule(sgd(), schedule='cosin', epochs=1, steps_per_epoch=1)


def test_a_warm_up_that_fills_the_run_is_named_once(caplog):
    with caplog.at_level('WARNING'):
        create_schedule(sgd(), schedule='cosine', epochs=1, steps_per_epoch=10, warmup_epochs=1)
    msgs = [(r.name, r.getMessage()) for r in caplog.records]
    assert len(msgs) == 1 and msgs[0][0] == 'unimodal.engine.optim' and 'train.warmup_epochs' in msgs[0][1]
    caplog.clear()
    with caplog.at_level('WARNING'):
        create_schedule(sgd(), schedule='cosine', epochs=3, steps_per_epoch=10, warmup_epochs=1)
    assert not caplog.records


# ------------------------------------------------------------------------------------------------ optimizers

def test_optimizers_from_timm():
    model = task_model()
    names = list_optimizers()
    assert {'adamw', 'adam', 'sgd', 'lamb', 'lion'} <= set(names)
    adam = create_optimizer(model, optimizer='adam', lr=2.5e-4, weight_decay=5e-7, betas=(0.95, 0.999))
    assert type(adam) is torch.optim.Adam  # weight decay as L2 on the gradient (the audio recipe)
    assert adam.defaults['betas'] == (0.95, 0.999) and adam.param_groups[0]['weight_decay'] == 5e-7
    sgd_opt = create_optimizer(model, optimizer='sgd', lr=0.1, weight_decay=1e-4, momentum=0.8)
    assert type(sgd_opt) is torch.optim.SGD and sgd_opt.defaults['nesterov'] and sgd_opt.defaults['momentum'] == 0.8
    assert type(create_optimizer(model, optimizer='adamw', lr=1e-3, weight_decay=0.05)) is torch.optim.AdamW
    lion = create_optimizer(model, optimizer='lion', lr=1e-4, weight_decay=0.05)
    assert type(lion).__name__ == 'Lion'
    assert type(create_optimizer(model, optimizer='lookahead_adamw', lr=1e-3, weight_decay=0.05)).__name__ == \
        'Lookahead'
    with pytest.raises(ValueError, match="did you mean adamw"):
        create_optimizer(model, optimizer='adamww', lr=1e-3, weight_decay=0.05)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match='no trainable parameters'):
        create_optimizer(model, optimizer='adamw', lr=1e-3, weight_decay=0.05)


# ------------------------------------------------------------------------------------------------ layer decay

def test_layer_decay_param_groups():
    model = task_model()
    plain = param_groups(model, 0.05)
    assert [g['lr_scale'] for g in plain] == [1.0, 1.0] and [g['weight_decay'] for g in plain] == [0.05, 0.0]
    groups = param_groups(model, 0.05, layer_decay=0.5)
    assert sum(len(g['params']) for g in groups) == len(list(model.parameters()))  # each in exactly one group
    s = {n: v[0] for n, v in scales_by_name(model, groups).items()}
    wd = {n: v[1] for n, v in scales_by_name(model, groups).items()}
    stem = s['trunk.downsample_layers.0.0.weight']
    assert s['heads.a.weight'] == 1.0 and s['adapters.a.weight'] == stem  # head on top, adapter with the stem
    assert stem < s['trunk.stages.0.0.pwconv1.1.weight'] < s['trunk.stages.2.1.pwconv1.1.weight'] \
        < s['trunk.stages.3.0.pwconv1.1.weight'] < s['trunk.norm.weight'] == 1.0
    # depths (1, 1, 2, 1): of the published groups only stem, 1, 2, 3, 12 and the top hold parameters
    assert stem == 0.5 ** 5
    assert wd['trunk.stages.0.0.act.1.gamma'] == 0.0 and wd['trunk.stages.0.0.pwconv1.1.weight'] == 0.05
    opt = create_optimizer(model, optimizer='adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    sched = create_schedule(opt, schedule='cosine', epochs=2, steps_per_epoch=2, warmup_epochs=1, min_lr=1e-4)
    for _ in range(2):
        sched.step()  # end of warm-up: every group at its own lr = lr x scale
    assert all(g['lr'] == pytest.approx(1e-3 * g['lr_scale']) for g in opt.param_groups)
    for _ in range(2):
        sched.step()  # end of the cosine: the floor is scaled too
    assert all(g['lr'] == pytest.approx(1e-4 * g['lr_scale']) for g in opt.param_groups)
    with pytest.raises(ValueError, match='group_matcher'):
        param_groups(nn.Linear(2, 2), 0.05, layer_decay=0.5)


@pytest.mark.parametrize('variant', ['unireplknet_s', 'unireplknet_b'])
def test_layer_decay_is_the_published_grouping_in_timm_and_engine(variant):
    """Depths (3, 3, 27, 3): timm's create_optimizer_v2(trunk, layer_decay=d) gives every trunk parameter the
    published scale d ** (13 - get_num_layer_for_convnext(name)), and the engine the same (adapters with the stem,
    heads at full lr); weight decay groups agree too."""
    trunk = timm.create_model(variant, num_classes=0, device='meta')
    opt = create_optimizer_v2(trunk, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    timm_scales = scales_by_name(trunk, opt.param_groups)
    assert len(timm_scales) == len(list(trunk.parameters()))
    for name, (scale, _) in timm_scales.items():
        assert scale == 0.75 ** (13 - published_layer_id(name)), name
    assert sorted({published_layer_id(n) for n in timm_scales}) == list(range(14))
    model = MultiTaskModel(trunk, {'a': nn.Conv2d(1, 3, 1)}, {'a': nn.Linear(trunk.num_features, 5)})
    engine = scales_by_name(model, param_groups(model, 0.05, layer_decay=0.75))
    assert {n: engine[f'trunk.{n}'] for n in timm_scales} == timm_scales
    assert engine['adapters.a.weight'][0] == engine['adapters.a.bias'][0] == 0.75 ** 13
    assert engine['heads.a.weight'] == (1.0, 0.05) and engine['heads.a.bias'] == (1.0, 0.0)


@pytest.mark.parametrize('variant', ['unireplknet_a', 'unireplknet_t', 'unireplknet_test'])
def test_shallower_trunks_timm_and_engine_agree(variant):
    """Fewer stage-2 blocks: timm counts only the groups that hold parameters; the engine uses the same numbers."""
    trunk = timm.create_model(variant, num_classes=0, device='meta')
    timm_scales = scales_by_name(trunk, create_optimizer_v2(trunk, 'adamw', lr=1e-3, weight_decay=0.05,
                                                            layer_decay=0.75).param_groups)
    engine = scales_by_name(trunk, param_groups(trunk, 0.05, layer_decay=0.75))
    assert engine == timm_scales
    layers = sorted({published_layer_id(n) for n in timm_scales})  # same order as published, gaps closed
    for name, (scale, _) in timm_scales.items():
        assert scale == 0.75 ** (len(layers) - 1 - layers.index(published_layer_id(name))), name


def test_layer_decay_is_off_for_a_frozen_trunk_and_one_means_off():
    model = task_model()
    same = [(g['lr_scale'], g['weight_decay'], len(g['params'])) for g in param_groups(model, 0.05)]
    assert [(g['lr_scale'], g['weight_decay'], len(g['params'])) for g in param_groups(model, 0.05, 1.0)] == same
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    assert all(g['lr_scale'] == 1.0 for g in param_groups(model, 0.05, 0.5))
    assert len(param_groups(model, 0.0)) == 2  # weight decay 0 keeps both groups (resumable optimizer state)
