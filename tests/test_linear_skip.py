"""The forecast head's linear skip (time-series adapter ``linear_skip``): head(features) + Linear(window), the
skip at zero or fitted by least squares on the training windows before training (``unimodal.engine.data_init``)."""
import pytest
import torch
from torch.utils.data import Dataset

from unimodal.config import parse_set_overrides, resolve_run_config
from unimodal.engine.data_init import init_heads_from_data
from unimodal.models.baselines import fit_linear_forecaster
from unimodal.models.heads import ForecastHead, LinearSkipForecastHead
from unimodal.models.task_model import create_model

L, H, N = 16, 4, 3


class Windows(Dataset):
    """AR(2)-like series with per-series level and scale: a linear map of the window forecasts them well."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        t = torch.arange(n + L + H, dtype=torch.float32)
        series = torch.stack([torch.sin(t * (0.3 + 0.1 * k)) * (1 + k) + 5 * k for k in range(N)], 1)
        series = series + 0.05 * torch.randn(series.shape, generator=g)
        self.x = torch.stack([series[i:i + L] for i in range(n)])
        self.y = torch.stack([series[i + L:i + L + H] for i in range(n)])

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


class _One:
    """The one-task view init_heads_from_data reads (like MultiTaskModel.task_model)."""

    def __init__(self, tm):
        self.tm = tm

    def task_model(self, name):
        return self.tm


def _model(skip, **kw):
    torch.manual_seed(0)
    return create_model('timeseries', variant='unireplknet_test', input_len=L, horizon=H, num_series=N,
                        mode='grid', image_size=[32, 32], linear_skip=skip, **kw)


def test_off_is_the_plain_head_and_zero_starts_as_it():
    plain, zero = _model('off'), _model('zero')
    assert isinstance(plain.head, ForecastHead) and isinstance(zero.head, LinearSkipForecastHead)
    zero.head.head.load_state_dict(plain.head.state_dict())
    x = torch.randn(2, L, N)
    plain.eval(), zero.eval()
    torch.testing.assert_close(zero(x), plain(x))  # the zero skip adds nothing at first
    assert zero.head.skip.weight.requires_grad and not zero.head.needs_data_init


def test_lsq_init_starts_as_the_least_squares_linear_forecaster():
    ds = Windows(200, 0)
    model = _model('lsq')
    assert model.head.needs_data_init
    init_heads_from_data(_One(model), {'timeseries': ds})
    assert not model.head.needs_data_init
    assert torch.count_nonzero(model.head.head.fc.weight) == 0  # the trunk's part starts at zero
    # the same least-squares problem solved directly on the RevIN-normalised windows
    xn, (mean, std) = model.adapter.normalize(ds.x)
    ref = fit_linear_forecaster([(xn, (ds.y - mean) / std)], L, H)
    torch.testing.assert_close(model.head.skip.weight, ref.linear.weight, rtol=1e-4, atol=1e-5)
    model.eval()
    test = Windows(50, 1)
    with torch.no_grad():
        pred = model(test.x)
        mse = float(((pred - test.y) ** 2).mean())
        persistence = float(((test.x[:, -1:] - test.y) ** 2).mean())
    assert pred.shape == (50, H, N)
    assert mse < 0.2 * persistence  # far better than a trivial forecast before any training step


def test_skip_wraps_the_corrformer_decoder_too_and_bad_values_fail():
    torch.manual_seed(0)
    m = create_model('timeseries', variant='unireplknet_test', input_len=24, horizon=12, num_series=8,
                     mode='paper', group_size=4, embed_dim=12, forecaster='corrformer',
                     forecaster_options={'n_heads': 8, 'd_ff': 32, 'node_list': [2]}, linear_skip='zero').eval()
    assert isinstance(m.head, LinearSkipForecastHead) and getattr(m.head.head, 'takes_state', False)
    x = torch.randn(2, 24, 8)
    with torch.no_grad():
        before = m(x)
        torch.nn.init.constant_(m.head.skip.bias, 0.5)
        after = m(x)
    assert before.shape == (2, 12, 8) and not torch.allclose(before, after)  # the skip reaches the output
    with pytest.raises(ValueError, match='linear_skip'):
        _model('yes')


def test_task_defaults_use_it_and_the_published_recipes_do_not():
    cfg = resolve_run_config({}, {'task': 'timeseries'}, parse_set_overrides([]))
    assert cfg.model.adapter['linear_skip'] == 'lsq'
    from unimodal.config.files import load_config_file
    for name in ('weather_global_temp', 'weather_global_wind', 'weather_tslib'):
        recipe = resolve_run_config(load_config_file(name))
        assert recipe.model.adapter.get('linear_skip', 'off') == 'off', name
        assert recipe.train.precise_bn == 0
        assert recipe.model.trunk.get('layer_scale_init_value', 1e-6) == 1e-6, name
