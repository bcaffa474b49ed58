"""Time-series adapter (paper / grid modes) in the full task model, and the forecasting baselines."""
import math

import pytest
import torch

from unimodal import InputShapeError, create_model
from unimodal.modalities.base import get_adapter_class
from unimodal.modalities.timeseries import TimeSeriesAdapter, paper_embed_dim
from unimodal.models.baselines import (LinearForecaster, fit_linear_forecaster, moving_average,
                                       persistence_forecast, seasonal_naive_forecast)

L, H = 16, 4


def _model(mode, n, **kw):
    torch.manual_seed(0)
    if mode == 'paper':
        kw.setdefault('group_size', 1)  # one series per trunk image (the published 11 needs N % 11 == 0)
    return create_model('timeseries', 'unireplknet_test', input_len=L, horizon=H, num_series=n, mode=mode, **kw)


def _windows(b, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(L, dtype=torch.float32)[None, :, None]
    phase = torch.rand(b, 1, n, generator=g) * 6.28
    return 20 + 5 * torch.sin(t / 3 + phase) + torch.randn(b, L, n, generator=g)


@pytest.mark.parametrize('mode', ['grid', 'paper'])
@pytest.mark.parametrize('n', [1, 3])
def test_shapes_views_and_scale_equivariance(mode, n):
    m = _model(mode, n).eval()
    a = m.adapter
    assert a.head_kind == 'forecast'
    if mode == 'paper':
        assert (a.out_chans, a.num_views, a.series_per_view) == (1, n, 1)
    else:
        assert (a.num_views, a.series_per_view) == (1, n)
    x = _windows(2, n)
    grid, state = a(x)
    assert grid.shape[0] == 2 * a.num_views and grid.shape[1] == a.out_chans
    assert min(grid.shape[-2:]) >= 32 and all(s % 32 == 0 for s in grid.shape[-2:])
    assert state.mean.shape == state.std.shape == (2, 1, n)
    with torch.no_grad():
        y = m(x)
        # forecasts come back in the input's scale: an affine change of units maps the forecast the same way
        y2 = m(x * 100 + 1000)
    assert y.shape == (2, H, n)
    torch.testing.assert_close(y2, y * 100 + 1000, rtol=1e-4, atol=1e-2)
    assert (y - 20).abs().max() < 30  # near the data's level, not near the normalised scale


def test_paper_layout_is_the_published_raw_reshape():
    # 48 steps x 768 channels -> 192 x 192 (published); the default width makes L*D a square of side >= 32
    assert math.isqrt(48 * paper_embed_dim(48)) ** 2 == 48 * paper_embed_dim(48)
    a = TimeSeriesAdapter(48, 2, mode='paper', embed_dim=768, group_size=1).eval()
    assert a.image_size == (192, 192)
    x = torch.randn(1, 48, 2)
    grid, _ = a(x)
    xn, _ = a.normalize(x)
    tokens = a.embed.value(xn[:, :, 1].reshape(1, 1, 48))[0].t()  # series 1: (L, D)
    torch.testing.assert_close(grid[1, 0], tokens.reshape(192, 192))
    # token embedding is circular over time, as published
    assert a.embed.value.padding_mode == 'circular'
    # a non-square L*D is zero-padded into the next square
    b = TimeSeriesAdapter(10, 1, mode='paper', embed_dim=11, group_size=1)
    assert b.image_size == (11, 11) and b(torch.randn(2, 10, 1))[0].shape == (2, 1, 11, 11)


def test_alias_registered():
    assert get_adapter_class('timeseries') is TimeSeriesAdapter
    assert get_adapter_class('weather').__mro__[1] is TimeSeriesAdapter  # the first name, for old checkpoints


def test_constant_series_round_trip_through_revin():
    a = TimeSeriesAdapter(L, 3, mode='grid')
    x = torch.tensor([5.0, -3.0, 1234.5]).expand(2, L, 3).contiguous()
    xn, state = a.normalize(x)
    assert torch.allclose(xn, torch.zeros_like(xn))
    # a head that outputs the normalised constant (the affine bias) decodes exactly to the constant
    with torch.no_grad():
        a.revin.weight.fill_(1.7)
        a.revin.bias.fill_(0.3)
    xn, state = a.normalize(x)
    y = a.decode(torch.full((2, H, 3), 0.3), state)
    torch.testing.assert_close(y, x[:, :H])


def test_constant_series_forecast_after_short_fit():
    m = _model('grid', 2)
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(8):
        levels = torch.randn(4, 1, 2, generator=g) * 50
        x, y = levels.expand(4, L, 2), levels.expand(4, H, 2)
        loss = torch.nn.functional.mse_loss(m(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    levels = torch.tensor([[[12.5, -40.0]]])
    with torch.no_grad():
        out = m(levels.expand(1, L, 2).contiguous())
    torch.testing.assert_close(out, levels.expand(1, H, 2), rtol=0, atol=1e-2)


@pytest.mark.parametrize('mode', ['grid', 'paper'])
def test_gradients_reach_the_embedding(mode):
    m = _model(mode, 2, series_embed=True).train()
    m(_windows(2, 2)).pow(2).mean().backward()
    a = m.adapter
    for p in (a.embed.value.weight if mode == 'paper' else a.token_embed.weight, a.series_table, a.revin.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


@pytest.mark.parametrize('mode', ['grid', 'paper'])
def test_reparameterize_keeps_outputs(mode):
    m = _model(mode, 2)
    x = _windows(4, 2)
    with torch.no_grad():
        m.train()
        for _ in range(3):
            m(x + torch.randn_like(x))  # move the BatchNorm statistics away from their initial values
        m.eval()
        ref = m(x)
        m.reparameterize()
        out = m(x)
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel <= 1e-5


def test_trunk_chunk_matches_unchunked():
    m = _model('paper', 5).eval()
    x = _windows(2, 5)
    with torch.no_grad():
        ref = m(x)
        m.trunk_chunk = 4  # 10 station maps in chunks of 4, 4, 2
        out = m(x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    m.train()
    m(x).sum().backward()  # the checkpointed training path runs and reaches the embedding
    assert m.adapter.embed.value.weight.grad.abs().sum() > 0


@pytest.mark.parametrize('bad,problem', [
    (torch.randn(L, 3), '3 dimensions'),
    (torch.randn(2, L + 1, 3), 'input_len'),
    (torch.randn(2, L, 4), 'num_series'),
    (torch.ones(2, L, 3, dtype=torch.long), 'floating'),
])
def test_wrong_input_raises_shape_error(bad, problem):
    m = _model('grid', 3)
    with pytest.raises(InputShapeError, match=problem) as e:
        m(bad)
    assert str(tuple(bad.shape)) in str(e.value)


def test_options_are_validated():
    with pytest.raises(ValueError, match='mode'):
        TimeSeriesAdapter(L, 2, mode='mosaic')
    with pytest.raises(ValueError, match='affine'):
        TimeSeriesAdapter(L, 2, affine='station')
    with pytest.raises(TypeError):
        TimeSeriesAdapter(L, 2, horizon=4)
    a = TimeSeriesAdapter(L, 2, affine='shared')
    assert a.revin.weight.shape == (1,)
    b = TimeSeriesAdapter(L, 2, revin=False)
    x = _windows(1, 2)
    assert torch.equal(b.decode(x[:, :H], b(x)[1]), x[:, :H])


# ---------------------------------------------------------------------------------------------- baselines
def test_persistence_and_seasonal_naive_on_hand_made_series():
    x = torch.arange(10, dtype=torch.float32).reshape(1, 10, 1).repeat(1, 1, 2)
    x[..., 1] *= -1
    p = persistence_forecast(x, 3)
    assert p.shape == (1, 3, 2) and torch.equal(p[0, :, 0], torch.tensor([9.0, 9, 9]))
    s = seasonal_naive_forecast(x, 5, period=4)  # last period is 6,7,8,9 and repeats
    assert torch.equal(s[0, :, 0], torch.tensor([6.0, 7, 8, 9, 6]))
    assert torch.equal(s[0, :, 1], -s[0, :, 0])
    assert seasonal_naive_forecast(x[0], 2, period=10).shape == (2, 2)  # a single (L, N) window
    with pytest.raises(ValueError, match='period'):
        seasonal_naive_forecast(x, 3, period=11)


def test_linear_forecaster_fit_recovers_a_linear_process():
    # a sinusoid's future is an exact linear function of its past: the closed-form fit must find it
    t = torch.arange(400, dtype=torch.float32)
    series = torch.stack([torch.sin(2 * math.pi * t / 24 + ph) * a + c
                          for ph, a, c in ((0, 1, 0), (1, 3, 5), (2, 0.5, -2))], 1)
    xs = torch.stack([series[i:i + 48] for i in range(0, 300, 3)])
    ys = torch.stack([series[i + 48:i + 60] for i in range(0, 300, 3)])
    loader = [(xs[i:i + 16], ys[i:i + 16]) for i in range(0, len(xs), 16)]
    model = fit_linear_forecaster(loader, 48, 12)
    with torch.no_grad():
        err = (model(xs) - ys).abs().max()
        assert err < 1e-2
        dec = fit_linear_forecaster(loader, 48, 12, decomposition=True)
        torch.testing.assert_close(dec(xs), model(xs), atol=1e-4, rtol=1e-4)
    # far better than persistence on the same windows
    assert err < (persistence_forecast(xs, 12) - ys).abs().max() / 10


def test_linear_forecaster_module():
    m = LinearForecaster(8, 3, decomposition=True, kernel_size=5)
    x = torch.randn(2, 8, 4)
    assert m(x).shape == (2, 3, 4) and m(x[0]).shape == (3, 4)
    trend = moving_average(x, 5)
    assert trend.shape == x.shape
    torch.testing.assert_close(trend[:, 2], x[:, :5].mean(1))
    with pytest.raises(ValueError, match='8 steps'):
        m(torch.randn(2, 9, 4))
