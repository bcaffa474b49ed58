"""Precise BatchNorm statistics (``train.precise_bn``, :mod:`unimodal.engine.precise_bn`): the running statistics
become the average batch statistics of the given batches, nothing else changes; the trainer calls it before each
validation only when the key is on."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from test_engine import fake_cfg  # registers the fake task (tiny trunk with BatchNorms, 40 training samples)
from unimodal.config import ConfigError
from unimodal.engine import precise_bn as pbn
from unimodal.engine import trainer as trainer_mod
from unimodal.engine.precise_bn import recompute_bn_stats, round_robin_batches, trained_batchnorms
from unimodal.engine.trainer import train
import timm
import unimodal.models  # noqa: F401  (registers the trunks with timm)


def _small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 2, 1),
                         nn.BatchNorm2d(2))


def test_running_stats_become_the_average_batch_stats_and_nothing_else_changes():
    net = _small_net()
    batches = [torch.randn(6, 3, 8, 8) * 3 + 2 for _ in range(4)]
    weights = {k: v.clone() for k, v in net.state_dict().items() if 'running' not in k and 'num_batches' not in k}
    net.train()
    net[3].eval()  # a module left in eval mode keeps it
    count_before = int(net[1].num_batches_tracked)
    report = recompute_bn_stats(net, batches, net)
    # first BN: its input does not depend on the other modules, so the expected values are exact
    conv_out = [net[0](b) for b in batches]
    mean = torch.stack([o.mean((0, 2, 3)) for o in conv_out]).mean(0)
    var = torch.stack([o.var((0, 2, 3), unbiased=True) for o in conv_out]).mean(0)
    torch.testing.assert_close(net[1].running_mean, mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, var, rtol=1e-5, atol=1e-6)
    assert report == {'batches': 4, 'updated': 2, 'kept': 0}
    for k, v in weights.items():  # weights untouched
        assert torch.equal(net.state_dict()[k], v), k
    assert net[1].momentum == 0.1 and int(net[1].num_batches_tracked) == count_before
    assert net.training and net[1].training and not net[3].training  # modes restored


def test_statistics_are_taken_with_dropout_off():
    net = _small_net()
    batches = [torch.randn(6, 3, 8, 8) for _ in range(3)]
    recompute_bn_stats(net, batches, net)
    with torch.no_grad():
        bn1 = net[1]  # normalizes with each batch's own statistics while they are gathered; then no dropout
        z = [net[4](net[2](F.batch_norm(net[0](b), None, None, bn1.weight, bn1.bias, True))) for b in batches]
    torch.testing.assert_close(net[5].running_mean, torch.stack([o.mean((0, 2, 3)) for o in z]).mean(0),
                               rtol=1e-5, atol=1e-6)


def test_frozen_and_unreached_batchnorms_keep_their_statistics():
    net = _small_net()
    net[1].running_mean.fill_(0.5)
    frozen_mean = net[1].running_mean.clone()

    class Frozen(nn.Sequential):
        def train(self, mode=True):  # like MultiTaskModel with freeze_trunk: the first part stays in eval mode
            super().train(mode)
            self[0].eval()
            return self

    model = Frozen(nn.Sequential(net[0], net[1]), nn.Sequential(nn.Conv2d(3, 2, 1), nn.BatchNorm2d(2)))
    assert trained_batchnorms(model) == [model[1][1]]
    unreached = model[1][1].running_mean.clone()
    report = recompute_bn_stats(model, [torch.randn(2, 3, 8, 8)], model[0])  # only the frozen part runs
    assert torch.equal(model[0][1].running_mean, frozen_mean)
    assert torch.equal(model[1][1].running_mean, unreached) and report['kept'] == 1


def test_an_error_mid_way_restores_the_old_statistics():
    net = _small_net()
    net[1].running_mean.fill_(0.25)

    def batches():
        yield torch.randn(4, 3, 8, 8)
        raise RuntimeError('reader broke')

    with pytest.raises(RuntimeError, match='reader broke'):
        recompute_bn_stats(net, batches(), net)
    assert torch.equal(net[1].running_mean, torch.full((4,), 0.25)) and net[1].momentum == 0.1


@pytest.mark.parametrize('fast', [True, False])
def test_trunk_fast_path_channels_last_gives_the_reference_statistics(fast):
    """The trunk's fast path (channels-last on CPU, BatchNorm folded where frozen) must update the statistics in
    training-mode BatchNorms exactly as the module-by-module reference math does."""
    torch.manual_seed(0)
    ref = timm.create_model('unireplknet_test', num_classes=3)
    model = timm.create_model('unireplknet_test', num_classes=3)
    model.load_state_dict(ref.state_dict())
    ref.set_fast_path(False)
    model.set_fast_path(fast)
    if fast:
        model.set_device_options(channels_last=True)
    batches = [torch.randn(4, 3, 64, 64) for _ in range(3)]
    recompute_bn_stats(ref, batches, ref)
    recompute_bn_stats(model, batches, model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    for a, b in zip((m for m in ref.modules() if isinstance(m, nn.BatchNorm2d)), bns):
        torch.testing.assert_close(b.running_mean, a.running_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(b.running_var, a.running_var, rtol=1e-4, atol=1e-5)
    # and they differ from the initial ones (zeros / ones): the statistics were really recomputed
    assert any(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in bns)


def test_round_robin_batches_take_each_task_in_turn_and_at_most_one_pass():
    from torch.utils.data import DataLoader, TensorDataset
    a = DataLoader(TensorDataset(torch.zeros(10, 1), torch.zeros(10)), batch_size=4)  # 3 batches
    b = DataLoader(TensorDataset(torch.ones(20, 1), torch.zeros(20)), batch_size=4)  # 5 batches
    names = [n for n, _ in round_robin_batches({'a': a, 'b': b}, {'a': 4, 'b': 4}, set_epoch=0)]
    assert names == ['a', 'b', 'a', 'b', 'a', 'b', 'b']


def test_config_key_is_checked():
    assert fake_cfg().train.precise_bn == 0
    assert fake_cfg('train.precise_bn=3').train.precise_bn == 3
    with pytest.raises(ConfigError, match='train.precise_bn'):
        fake_cfg('train.precise_bn=-1')


def test_trainer_calls_it_before_each_validation_only_when_on(tmp_path, monkeypatch):
    calls = []
    real = pbn.recompute_bn_stats

    def spy(model, batches, forward, world_size=1):
        batches = list(batches)
        calls.append(len(batches))
        return real(model, batches, forward, world_size)

    monkeypatch.setattr(trainer_mod, 'recompute_bn_stats', spy)
    train(fake_cfg('train.epochs=2'), out_dir=tmp_path / 'off')
    assert calls == []
    train(fake_cfg('train.epochs=2', 'train.precise_bn=2'), out_dir=tmp_path / 'on')
    assert calls == [2, 2]
    train(fake_cfg('train.epochs=1', 'train.precise_bn=50'), out_dir=tmp_path / 'capped')
    assert calls[-1] == 5  # 40 samples / batch 8: one pass at most
    train(fake_cfg('train.epochs=1', 'train.precise_bn=50', 'train.max_steps_per_epoch=2'), out_dir=tmp_path / 'short')
    assert calls[-1] == 2  # ... and at most an epoch's batches
    # the recomputed statistics are what best.pt stores and what was validated
    ck = torch.load(tmp_path / 'capped' / 'best.pt', weights_only=True)
    log = [json.loads(line) for line in (tmp_path / 'capped' / 'metrics.jsonl').read_text().splitlines()]
    assert ck['epoch'] == 1 and log[0]['val']['fake_blobs']['num_samples'] == 12
