"""Engine units on a small fake task (fast): metrics, sharding, schedules, mixup, atomic checkpoints, resume,
the multi-task model (gradients per task, frozen trunk), plug-in datasets."""
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from unimodal.config import ConfigError, JointConfig, parse_set_overrides, resolve_run_config
from unimodal.engine import checkpoint as ckpt_mod
from unimodal.engine.build import build_model
from unimodal.engine.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from unimodal.engine.distributed import ShardSampler
from unimodal.engine.metrics import ClassificationMeter, ForecastMeter
from unimodal.engine.mixup import MixupCutmix
from unimodal.engine.trainer import _epoch_plan, train, TaskRun
from unimodal.modalities.base import Adapter, register_adapter
from unimodal.tasks import PluginTask, get_kind, make_task_spec
from unimodal.tasks.base import Task, register_task


# ------------------------------------------------------------------------------------------------ a fake task

class BlobSet(Dataset):
    """(2, 16, 16) images; the class is where a blob sits (structure, not a global mean)."""

    classes = ['nw', 'ne', 'sw', 'se']

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 4
        x = torch.randn(n, 2, 16, 16, generator=g) * 0.5
        for i, c in enumerate(self.y.tolist()):
            r, col = (c // 2) * 8 + 2, (c % 2) * 8 + 2
            x[i, :, r:r + 4, col:col + 4] += 2.0
        self.x = x

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


@register_adapter('fake_grid')
class FakeGridAdapter(Adapter):
    name = 'fake_grid'
    head_kind = 'classification'
    input_desc = '(B, 2, 16, 16)'

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.out_chans = 2
        self.scale = nn.Parameter(torch.tensor(scale))

    def augment(self, x):
        return x + 0.05 * torch.randn_like(x)  # random: exercises RNG restoring on resume

    def encode(self, x):
        return x * self.scale, None

    @classmethod
    def make_datasets(cls, root):
        return {'train': BlobSet(24, 0), 'test': BlobSet(10, 1)}


@register_task
class FakeTask(Task):
    name = 'fake_blobs'
    adapter = 'fake_grid'
    kind = 'classification'
    description = 'test-only blob task'
    real_data = 'none (test task)'

    def default_config(self):
        return {'train': {'epochs': 2, 'batch_size': 8, 'lr': 3e-3, 'warmup_epochs': 0.5},
                'eval': {'batch_size': 5}}

    def make_builtin(self, cache_dir):
        return Path(cache_dir)

    def build_datasets(self, root, options, skip_bad=False, splits=None):
        if options:
            raise TypeError(f'unexpected keyword argument(s) {sorted(options)}')
        sets = {'train': BlobSet(40, 0), 'val': BlobSet(12, 1), 'test': BlobSet(13, 2)}
        return {k: v for k, v in sets.items() if splits is None or k in splits}

    def model_kwargs(self, cfg, train_set):
        return {'num_classes': 4}


def fake_cfg(*sets):
    return resolve_run_config({}, {'task': 'fake_blobs'}, parse_set_overrides(['train.device=cpu', *sets]))


# ------------------------------------------------------------------------------------------------ metrics

def test_classification_meter_matches_hand_computation():
    m = ClassificationMeter(5, list('abcde'))
    logits = torch.tensor([[5., 4, 3, 2, 1], [1, 5, 4, 3, 2], [5, 4, 3, 2, 1], [1, 2, 3, 4, 5], [2, 1, 0, 0, 0],
                           [0, 0, 0, 1, 2]])
    target = torch.tensor([0, 1, 2, 4, 1, 3])
    m.update(logits[:3], target[:3], loss_sum=3.0)
    m.update(logits[3:], target[3:], loss_sum=1.5)
    m.reduce()
    out = m.compute()
    # predictions: 0,1,0,4,0,4 -> correct 0,1,4 = 3 of 6
    assert out['top1'] == pytest.approx(50.0)
    assert out['num_samples'] == 6 and out['loss'] == pytest.approx(0.75)
    # per class: a 1/1, b 1/2, c 0/1, d 0/1, e 1/1 -> mean 0.5
    assert out['mean_class_acc'] == pytest.approx(50.0)
    assert out['top5'] == pytest.approx(100.0)
    cm = torch.tensor(out['confusion_matrix'])
    assert cm.sum() == 6 and cm[1, 0] == 1 and cm[2, 0] == 1 and cm[3, 4] == 1


def test_forecast_meter_per_step_physical_units_and_baselines():
    m = ForecastMeter(horizon=2, phys_scale=torch.tensor([0.1, 10.0]), period=2)
    x = torch.tensor([[[1., 1.], [2., 2.], [3., 3.], [4., 4.]]])   # (1, L=4, N=2)
    y = torch.tensor([[[5., 5.], [6., 6.]]])                       # (1, H=2, N=2)
    pred = torch.tensor([[[5., 4.], [8., 6.]]])
    m.update(pred, y, loss_sum=0.0, x=x)
    m.reduce()
    out = m.compute()
    assert out['mse_per_step'] == pytest.approx([0.5, 2.0])          # step 0: (0 + 1)/2, step 1: (4 + 0)/2
    assert out['mse'] == pytest.approx(1.25) and out['mae'] == pytest.approx(0.75)
    # physical: errors scaled per series (0.1 for series 0, 10 for series 1)
    assert out['mse_phys_per_step'] == pytest.approx([(0 + 100) / 2, (0.04 + 0) / 2])
    pers = out['baselines']['persistence']                          # forecasts 4, 4
    assert pers['mse'] == pytest.approx((1 + 1 + 4 + 4) / 4)
    seas = out['baselines']['seasonal_naive']                        # period 2: forecasts 3, 4
    assert seas['mae'] == pytest.approx((2 + 2 + 2 + 2) / 4)
    assert get_kind('forecast').selection_score(out) == pytest.approx(1 - 1.25 / 2.5)


@pytest.mark.parametrize('n, world', [(10, 1), (10, 3), (7, 4), (3, 4)])
def test_shard_sampler_counts_every_sample_once(n, world):
    seen = [i for r in range(world) for i in ShardSampler(n, r, world)]
    assert sorted(seen) == list(range(n))
    assert sum(len(ShardSampler(n, r, world)) for r in range(world)) == n


# ------------------------------------------------------------------------------------------------ config, mixup

@pytest.mark.parametrize('value', [0, 1.5, True])
def test_layer_decay_is_validated(value):
    with pytest.raises(ConfigError, match='train.layer_decay'):
        resolve_run_config({}, {'task': 'audio'}, parse_set_overrides([f'train.layer_decay={value}']))


def test_mixup_and_cutmix_give_soft_targets():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 8, 8)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mixed, soft = MixupCutmix(3, mixup_alpha=10., label_smoothing=0.1)(x.clone(), y)
    assert soft.shape == (6, 3) and torch.allclose(soft.sum(1), torch.ones(6))
    assert not torch.allclose(mixed, x)
    _, soft_cut = MixupCutmix(3, cutmix_alpha=1.)(x.clone(), y)
    assert torch.allclose(soft_cut.sum(1), torch.ones(6))
    wave = torch.randn(4, 100)  # waveforms: mixup works, cutmix does not apply
    out, soft_w = MixupCutmix(2, cutmix_alpha=1.)(wave.clone(), torch.tensor([0, 1, 0, 1]))
    assert torch.equal(out, wave) and torch.equal(soft_w, torch.eye(2)[[0, 1, 0, 1]])


# ------------------------------------------------------------------------------------------------ checkpoints

def test_rng_state_roundtrip_through_weights_only_file(tmp_path):
    import random

    import numpy as np
    state = get_rng_state()
    save_checkpoint({'rng': state}, tmp_path / 'r.pt')
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(load_checkpoint(tmp_path / 'r.pt')['rng'])  # weights_only=True load
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_atomic_save_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / 'last.pt'
    save_checkpoint({'epoch': 1, 'w': torch.ones(3)}, path)
    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        f.write(b'PK\x03\x04 half a checkpoint')  # partial bytes reach the disk, then the process "dies"
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', crashing_save)
    with pytest.raises(OSError, match='disk full'):
        save_checkpoint({'epoch': 2, 'w': torch.zeros(3)}, path)
    monkeypatch.setattr(torch, 'save', real_save)
    old = load_checkpoint(path)
    assert old['epoch'] == 1 and torch.equal(old['w'], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.pt']  # no temp file left behind
    assert (path.stat().st_mode & 0o777) != 0o600  # normal permissions, not mkstemp's


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(ckpt_mod.CheckpointError, match='bad.pt'):
        load_checkpoint(bad)


# ------------------------------------------------------------------------------------------------ runs

def test_fake_run_writes_run_dir_and_learns(tmp_path):
    cfg = fake_cfg('train.epochs=3')
    res = train(cfg, out_dir=tmp_path / 'run')
    run = tmp_path / 'run'
    for name in ['config.yaml', 'metrics.jsonl', 'results.json', 'best.pt', 'last.pt', 'curves.png',
                 'confusion_fake_blobs.png']:
        assert (run / name).is_file(), name
    log = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log] == [1, 2, 3]
    assert all('fake_blobs' in r['val'] and 'lr' in r and 'time_s' in r for r in log)
    assert res['tasks']['fake_blobs']['num_samples'] == 13  # every test sample, nothing dropped
    assert res['metrics']['top1'] > 25.0  # above chance (4 classes)
    ck = torch.load(run / 'best.pt', weights_only=True)
    assert ck['tasks']['fake_blobs']['classes'] == BlobSet.classes
    assert ck['config']['task'] == 'fake_blobs' and ck['epoch'] == res['best_epoch']


def test_resume_gives_the_same_final_metrics(tmp_path):
    sets = ['train.epochs=3', 'train.deterministic=true', 'train.ema=true', 'train.ema_decay=0.9']
    full = train(fake_cfg(*sets), out_dir=tmp_path / 'full')
    part = train(fake_cfg(*sets), out_dir=tmp_path / 'part', stop_after_epochs=1)
    assert part['stopped_at_epoch'] == 1
    assert not (tmp_path / 'part' / 'results.json').exists()
    base = load_checkpoint(tmp_path / 'part' / 'last.pt')['config']
    resumed = train(resolve_run_config({}, {}, {}, base=base), out_dir=tmp_path / 'part',
                    resume=tmp_path / 'part' / 'last.pt')
    assert resumed['metrics'] == full['metrics']
    log_full = (tmp_path / 'full' / 'metrics.jsonl').read_text().splitlines()
    log_part = (tmp_path / 'part' / 'metrics.jsonl').read_text().splitlines()
    def strip(line):
        return {k: v for k, v in json.loads(line).items() if k != 'time_s'}
    assert [strip(x) for x in log_part] == [strip(x) for x in log_full]
    # the optimizer state holds per-group lr scales: resuming with other groups is refused, naming the key
    with pytest.raises(ConfigError, match=r'train\.layer_decay=None.*0\.5'):
        train(resolve_run_config({}, {}, parse_set_overrides(['train.layer_decay=0.5']), base=base),
              out_dir=tmp_path / 'part', resume=tmp_path / 'part' / 'last.pt')


def test_trainer_tells_the_adapter_its_progress_before_every_step(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(FakeGridAdapter, 'set_progress',
                        lambda self, epoch: (seen.append(round(epoch, 6)), Adapter.set_progress(self, epoch)))
    train(fake_cfg('train.epochs=2'), out_dir=tmp_path / 'r')
    # 40 samples / batch 8 = 5 steps an epoch: epochs done, fractional, before each step
    assert seen == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8]


def test_grad_accumulation_and_clipping_run(tmp_path):
    res = train(fake_cfg('train.epochs=1', 'train.grad_accum=2', 'train.clip_grad=0.5', 'train.schedule=step',
                         'train.optimizer=adam', 'train.loss=bce', 'train.mixup=0.4', 'train.cutmix=1.0'),
                out_dir=tmp_path / 'r')
    log = json.loads((tmp_path / 'r' / 'metrics.jsonl').read_text().splitlines()[0])
    assert log['step'] == math.ceil(5 / 2)  # 40 samples / batch 8 = 5 batches -> 3 optimiser steps
    assert res['metrics']['num_samples'] == 13


def test_global_batch_size_sets_grad_accum_for_any_process_count(tmp_path):
    cfg = fake_cfg('train.global_batch_size=32')  # batch 8 per process
    assert [cfg.grad_accum_steps(w) for w in (1, 2, 4)] == [4, 2, 1]
    res = train(fake_cfg('train.epochs=1', 'train.global_batch_size=16'), out_dir=tmp_path / 'r')
    log = json.loads((tmp_path / 'r' / 'metrics.jsonl').read_text().splitlines()[0])
    assert log['step'] == math.ceil(5 / 2) and res['epochs'] == 1  # 5 batches of 8, 2 per optimiser step
    with pytest.raises(ConfigError, match=r'global_batch_size=20 is not a multiple of train.batch_size'):
        fake_cfg('train.global_batch_size=20')
    with pytest.raises(ConfigError, match='not a multiple'):
        fake_cfg('train.global_batch_size=32').grad_accum_steps(3)
    with pytest.raises(ConfigError, match=r'grad_accum=2 contradicts train.global_batch_size=32'):
        fake_cfg('train.global_batch_size=32', 'train.grad_accum=2').grad_accum_steps(1)
    assert fake_cfg('train.global_batch_size=32', 'train.grad_accum=2').grad_accum_steps(2) == 2  # consistent
    assert fake_cfg('train.grad_accum=3').grad_accum_steps(4) == 3 and fake_cfg().grad_accum_steps(4) == 1


@pytest.mark.parametrize('choice', ['best', 'last'])
def test_eval_checkpoint_chooses_the_tested_epoch_and_results_say_which(tmp_path, choice):
    res = train(fake_cfg('train.epochs=2', f'eval.checkpoint={choice}'), out_dir=tmp_path / 'r')
    saved = json.loads((tmp_path / 'r' / 'results.json').read_text())
    assert saved['tested_checkpoint'] == res['tested_checkpoint'] == choice
    assert saved['checkpoint'].endswith(f'{choice}.pt')
    assert saved['tested_epoch'] == (saved['best_epoch'] if choice == 'best' else 2)
    with pytest.raises(ConfigError, match='eval.checkpoint'):
        fake_cfg('eval.checkpoint=first')


# ------------------------------------------------------------------------------------------------ multi-task model

def _fake_specs():
    task = FakeTask()
    cfg = fake_cfg()
    sets = task.build_datasets(None, {})
    spec = make_task_spec(task, cfg.task_settings(task.name), sets)
    return {'a': spec.replace(name='a'), 'b': spec.replace(name='b', head_kwargs={'num_classes': 3})}, cfg


def test_joint_model_routes_gradients_per_task():
    specs, cfg = _fake_specs()
    model = build_model(specs, cfg.model)
    assert set(model.heads) == {'a', 'b'} and model.task_model('a').trunk is model.task_model('b').trunk
    x = torch.randn(4, 2, 16, 16)
    model(x, task='a').sum().backward()
    grads = {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}
    assert any(g for n, g in grads.items() if n.startswith('trunk.'))
    assert all(grads[n] for n in grads if n.startswith('heads.a.'))
    assert not any(grads[n] for n in grads if n.startswith('heads.b.') or n.startswith('adapters.b.'))
    assert model(x, task='b').shape == (4, 3)
    with pytest.raises(ValueError, match='task name'):
        model(x)


def test_frozen_trunk_stays_in_eval_mode_without_grads():
    specs, cfg = _fake_specs()
    model = build_model(specs, dataclasses.replace(cfg.model, freeze_trunk=True)).train()
    assert not model.trunk.training and model.heads['a'].training
    assert not any(p.requires_grad for p in model.trunk.parameters())


def test_channel_reconciliation_uses_adapter_projection():
    specs, cfg = _fake_specs()
    model = build_model(specs, dataclasses.replace(cfg.model, trunk_chans=3))
    assert isinstance(model.adapters['a'].channel_proj, nn.Conv2d)
    assert model.trunk.downsample_layers[0][0].in_channels == 3
    assert model(torch.randn(2, 2, 16, 16), task='a').shape == (2, 4)


def test_epoch_plan_round_robin_and_weighted():
    runs = [TaskRun(name=n, task=None, settings=None, root=None, builtin=True, sets={}, spec=None, batches=b,
                    sample_weight=w) for n, b, w in [('a', 4, 1.0), ('b', 2, 3.0)]]
    assert _epoch_plan(runs, JointConfig(), 0, 0) == ['a', 'b', 'a', 'b', 'a', 'b']
    weighted = JointConfig(sampling='weighted', steps_per_epoch=400)
    plan = _epoch_plan(runs, weighted, 0, 0)
    assert plan == _epoch_plan(runs, weighted, 0, 0)  # identical on every rank
    assert 0.65 < plan.count('b') / 400 < 0.85  # weights 1:3


def test_plugin_task_protocol():
    task = PluginTask(FakeGridAdapter, 'fake_grid')
    sets = task.build_datasets(None, {})
    assert set(sets) == {'train', 'val', 'test'} and sets['val'] is sets['test']
    assert task.model_kwargs({}, sets['train']) == {'num_classes': 4}
    with pytest.raises(ConfigError, match='takes no reader options'):
        task.build_datasets(None, {'x': 1})
