"""Task kinds (heads, losses, meters, scores, results entries, plots), the typed task spec, run checkpoints read
back, and plots that leave matplotlib's backend alone."""
import math

import pytest
import torch
import torch.nn.functional as F

from unimodal.config import ConfigError
from unimodal.engine.checkpoint import CHECKPOINT_FORMAT, RunCheckpoint, load_checkpoint, save_checkpoint, to_plain
from unimodal.engine.mixup import smooth_one_hot
from unimodal.models.heads import ClassificationHead, ForecastHead, create_head
from unimodal.tasks import TaskSpec, get_kind

CLS, FC = get_kind('classification'), get_kind('forecast')


def _spec(kind='classification', loss='ce', **kw):
    head = {'num_classes': 3} if kind == 'classification' else {'horizon': 2}
    return TaskSpec(name='t', kind=kind, adapter='x', head_kwargs=head, loss=loss, **kw)


def test_unknown_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown task kind 'regression'"):
        get_kind('regression')


def test_heads_are_built_by_the_kind():
    assert isinstance(CLS.create_head(8, num_classes=5, num_views=2, view_pool='concat'), ClassificationHead)
    assert isinstance(create_head('forecast', 8, horizon=4), ForecastHead)
    with pytest.raises(TypeError, match='needs num_classes'):
        CLS.create_head(8)
    with pytest.raises(TypeError, match='audio is a classification adapter: horizon does not apply'):
        CLS.create_head(8, num_classes=3, horizon=4, owner='audio')
    with pytest.raises(TypeError, match='num_classes does not apply'):
        FC.create_head(8, horizon=4, num_classes=3)


def test_losses_and_their_checks():
    assert CLS.resolve_loss('auto') == 'ce' and FC.resolve_loss('auto') == 'mse' and CLS.resolve_loss('bce') == 'bce'
    with pytest.raises(ConfigError, match='train.loss=mse does not apply to a classification task'):
        CLS.check_loss('mse')
    torch.manual_seed(0)
    out, y = torch.randn(4, 3), torch.tensor([0, 2, 1, 2])
    assert torch.allclose(CLS.train_loss(_spec(), out, y, None, 0.1), F.cross_entropy(out, y, label_smoothing=0.1))
    soft = torch.softmax(torch.randn(4, 3), -1)
    assert torch.allclose(CLS.train_loss(_spec(), out, y, soft, 0.0), -(soft * out.log_softmax(-1)).sum(-1).mean())
    want = F.binary_cross_entropy_with_logits(out, smooth_one_hot(y, 3, 0.2))
    assert torch.allclose(CLS.train_loss(_spec(loss='bce'), out, y, None, 0.2), want)
    assert CLS.eval_loss_sum('ce', out, y) == pytest.approx(float(F.cross_entropy(out, y, reduction='sum')))


def test_forecast_loss_masks_missing_targets():
    out = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    y = torch.tensor([[[1.5, float('nan')], [3.0, 5.0]]])
    assert float(FC.train_loss(_spec('forecast', 'mse'), out, y, None, 0.0)) == pytest.approx((0.25 + 0 + 1) / 3)
    assert FC.eval_loss_sum('mse', out, y) == pytest.approx((0.25 + 0 + 0 + 1) / 4)  # per sample: mean over all
    assert math.isfinite(float(FC.train_loss(_spec('forecast', 'mse'), out, y, None, 0.0)))


def test_mixer_only_for_classification_with_mixing_on():
    from unimodal.config import TaskTrainConfig
    assert CLS.create_mixer(_spec(), TaskTrainConfig()) is None
    mixer = CLS.create_mixer(_spec(), TaskTrainConfig(mixup=0.4, mixup_prob=0.6, label_smoothing=0.1))
    assert mixer.num_classes == 3 and mixer.prob == 0.6 and mixer.label_smoothing == 0.1
    assert FC.create_mixer(_spec('forecast', 'mse'), TaskTrainConfig(mixup=0.4)) is None


def test_scores_summaries_and_results_entries():
    m = {'top1': 75.0, 'loss': 0.5, 'num_samples': 4, 'confusion_matrix': [[1, 0], [1, 2]], 'classes': ['a', 'b']}
    assert CLS.selection_score(m) == 0.75 and 'top1 75.00%' in CLS.summary(m)
    scalars, extra = CLS.split_results(m)
    assert 'confusion_matrix' not in scalars and extra == {'confusion_matrix': [[1, 0], [1, 2]], 'classes': ['a', 'b']}
    assert 'confusion_matrix' in m  # the input is left alone
    f = {'mse': 0.5, 'mae': 0.4, 'baselines': {'persistence': {'mse': 2.0}}}
    assert FC.selection_score(f) == pytest.approx(0.75) and FC.selection_score({'mse': 0.5}) == -0.5
    assert FC.split_results(f) == (f, {}) and 'mse 0.5' in FC.summary(f)


@pytest.fixture
def svg_backend():
    """A backend other than Agg (a notebook's, say), restored afterwards."""
    import matplotlib
    old = matplotlib.get_backend()
    matplotlib.use('svg', force=True)
    yield 'svg'
    matplotlib.use(old, force=True)


def test_plots_leave_the_matplotlib_backend_alone(tmp_path, svg_backend):
    import matplotlib
    from unimodal.engine import plots
    assert matplotlib.get_backend() == svg_backend
    cm_path = CLS.plot('t', 'test', {'top1': 50.0}, {'confusion_matrix': [[1, 1], [0, 2]], 'classes': ['a', 'b']}, None,
                       tmp_path)
    example = {'x': torch.randn(1, 6, 3), 'y': torch.randn(1, 2, 3), 'pred': torch.randn(1, 2, 3)}
    fc_path = FC.plot('w', 'test', {'mse': 0.1}, {}, example, tmp_path)
    records = [{'epoch': 1, 'train': {'t': {'loss': 1.0}, 'loss': 1.0}, 'val': {'t': {'loss': 0.9, 'top1': 40.0}}},
               {'epoch': 2, 'train': {'t': {'loss': 0.8}, 'loss': 0.8}, 'val': {'t': {'loss': 0.7, 'top1': 60.0}}}]
    curves = plots.plot_curves(records, tmp_path / 'curves.png', main_metrics={'t': 'top1'})
    for path in (cm_path, fc_path, curves):
        assert path.is_file() and path.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert matplotlib.get_backend() == svg_backend  # the user's backend, not Agg
    assert CLS.plot('t', 'test', {'top1': 1.0}, {}, None, tmp_path) is None  # nothing to draw


def test_task_spec_round_trip_through_a_weights_only_checkpoint(tmp_path):
    spec = _spec(classes=['a', 'b', 'c'], metric_info={'classes': ['a', 'b', 'c']}, input_shape=[16000],
                 adapter_kwargs={'mode': 'paper'})
    save_checkpoint({'tasks': {'t': to_plain(spec.to_dict())}}, tmp_path / 's.pt')
    back = TaskSpec.from_dict(load_checkpoint(tmp_path / 's.pt')['tasks']['t'])  # weights_only=True load
    assert back == spec and back.task_kind is CLS
    old = {k: v for k, v in spec.to_dict().items() if k != 'plugin'}  # an older checkpoint's dict, extra key too
    assert TaskSpec.from_dict({**old, 'dataset': 'x'}) == spec
    x = spec.example_input(3)
    assert x.shape == (3, 16000) and torch.equal(x, spec.example_input(3))


def test_run_checkpoint_reads_an_old_task_name(tmp_path):
    spec = _spec('forecast', 'mse', adapter_kwargs={}).replace(name='weather', adapter='weather')
    raw = {'format': CHECKPOINT_FORMAT, 'tasks': {'weather': spec.to_dict()}, 'config': {'task': 'weather'},
           'model': {'trunk.w': torch.ones(1), 'adapters.weather.a': torch.ones(2), 'heads.weather.fc': torch.ones(3)},
           'model_ema': None, 'model_meta': {'variant': 'unireplknet_test', 'deploy': False}}
    ckpt = RunCheckpoint.from_raw(raw, tmp_path / 'old.pt')
    assert ckpt.task_names == ['timeseries'] and ckpt.specs['timeseries'].name == 'timeseries'
    assert set(ckpt.raw['model']) == {'trunk.w', 'adapters.timeseries.a', 'heads.timeseries.fc'}
    assert ckpt.task_name('weather') == ckpt.task_name(None) == 'timeseries'
    assert ckpt.trunk_state() == {'w': torch.ones(1)}
    with pytest.raises(ConfigError, match="trained for task\\(s\\) timeseries, not 'audio'"):
        ckpt.task_name('audio')
    with pytest.raises(Exception, match='not a unimodal run checkpoint'):
        RunCheckpoint.from_raw({'model': {}}, tmp_path / 'x.pt')
