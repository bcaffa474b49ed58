"""The Corrformer decoder head: its correlation functions against references written from the paper's equations
(the released code's index arithmetic, looped), causality, any batch size, the published parameter count, training
through the engine."""
import math

import pytest
import torch
import torch.nn.functional as F

from unimodal import create_model
from unimodal.models.correlation import (CausalConv, CrossCorrelationLayer, MultiCorrelation, AutoCorrelationLayer,
                                         fit_length, lag_correlation, pivot_cross_correlation, roll_time,
                                         time_delay_aggregation)
from unimodal.models.corrformer import CorrformerHead, decoder_start, series_decompose


def test_lag_correlation_is_the_circular_correlation():
    g = torch.Generator().manual_seed(0)
    for L in (7, 8):  # odd lengths too (the released irfft would return L - 1 values)
        q, k = torch.randn(2, 3, L, generator=g), torch.randn(2, 3, L, generator=g)
        ref = torch.stack([(torch.roll(q, -tau, -1) * k).sum(-1) for tau in range(L)], -1)
        torch.testing.assert_close(lag_correlation(q, k), ref, rtol=1e-5, atol=1e-5)


def test_roll_time_and_fit_length():
    v = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(2, 3, 5)
    out = roll_time(v.unsqueeze(1), torch.tensor([[2], [-1]]))[:, 0]
    assert torch.equal(out[0], torch.roll(v[0], 2, -1)) and torch.equal(out[1], torch.roll(v[1], -1, -1))
    x = torch.ones(2, 3, 4)
    assert torch.equal(fit_length(x, 5, 1)[:, 3:], torch.zeros(2, 2, 4)) and fit_length(x, 2, 1).shape == (2, 2, 4)


def test_time_delay_aggregation_matches_the_released_index_arithmetic():
    g = torch.Generator().manual_seed(1)
    B, H, E, L, K = 2, 2, 3, 9, 2
    v, corr = torch.randn(B, H, E, L, generator=g), torch.randn(B, H, E, L, generator=g)
    mean = corr.mean(2)
    ref = torch.zeros_like(v)
    doubled = torch.cat([v, v], -1)  # the released code gathers from the values repeated twice
    for b in range(B):
        for h in range(H):
            w, lags = torch.topk(mean[b, h], K)
            w = torch.softmax(w, 0)
            for i in range(K):
                ref[b, h] += doubled[b, h][:, torch.arange(L) + lags[i]] * w[i]
    torch.testing.assert_close(time_delay_aggregation(v, corr, K), ref)


def test_causal_conv_is_causal_and_equals_pad_both_sides_then_chomp():
    torch.manual_seed(0)
    conv = CausalConv(4, [4, 4], kernel_size=3, dropout=0.0).eval()
    x = torch.randn(2, 4, 12)
    out = conv(x)
    # causal: changing positions >= 7 leaves outputs 0..6 as they were
    x2 = x.clone()
    x2[..., 7:] = torch.randn(2, 4, 5)
    torch.testing.assert_close(conv(x2)[..., :7], out[..., :7])
    assert not torch.allclose(conv(x2)[..., 7:], out[..., 7:])
    # the released form: Conv1d with padding (k-1)d on both sides, the last (k-1)d outputs cut
    ref = x
    for block in conv:
        p = block.pad
        d = block.conv1.dilation[0]
        h = F.relu(F.conv1d(ref, block.conv1.weight, block.conv1.bias, padding=p, dilation=d)[..., :-p])
        h = F.relu(F.conv1d(h, block.conv2.weight, block.conv2.bias, padding=p, dilation=d)[..., :-p])
        ref = F.relu(h + ref)
    torch.testing.assert_close(out, ref)
    assert [b.conv1.dilation[0] for b in conv] == [1, 3]  # dilations 3**i


def reference_cross_correlation(q, k, v, factor, fuse):
    """The released ``CrossCorrelation.forward`` with its delays ``L - tau``, gathers from doubled values, the sort
    of the nodes by delay, the fusion along the sorted nodes, the inverse sort and the align-back gather, looped."""
    G, n, H, E, L = v.shape
    out = torch.zeros_like(v)
    idx = torch.arange(L)
    for gi in range(G):
        for h in range(H):
            pivot = q[gi, :, h].mean(0)  # (E, L)
            lag, weight = [], []
            for j in range(n):
                score = lag_correlation(pivot, k[gi, j, h]).mean(0)
                w, t = torch.topk(score, factor)
                weight.append(w)
                lag.append(t)
            for i in range(factor):
                delay = torch.stack([L - lag[j][i] for j in range(n)])
                aligned = torch.stack([torch.cat([v[gi, j, h]] * 2, -1)[:, idx + delay[j]]
                                       * torch.sigmoid(weight[j][i]) for j in range(n)])  # (n, E, L)
                order = torch.sort(delay, stable=True).indices
                fused = fuse(aligned[order].reshape(1, n, E * L).transpose(1, 2)).transpose(1, 2).reshape(n, E, L)
                back = torch.empty_like(fused)
                back[order] = fused
                for j in range(n):
                    out[gi, j, h] += torch.cat([back[j]] * 2, -1)[:, idx + (L - delay[j])] / factor
    return out


def test_pivot_cross_correlation_matches_the_released_formulation():
    torch.manual_seed(0)
    G, n, H, E, L = 2, 3, 2, 2, 6
    q, k, v = torch.randn(G, n, H, E, L), torch.randn(G, n, H, E, L), torch.randn(G, n, H, E, L)
    fuse = CausalConv(E * L, [E * L], 3, dropout=0.0).eval()
    for factor in (1, 2):
        got = pivot_cross_correlation(q, k, v, factor, fuse)
        torch.testing.assert_close(got, reference_cross_correlation(q, k, v, factor, fuse), rtol=1e-5, atol=1e-5)


def test_multi_correlation_levels_follow_the_node_tree():
    """node_list [2, 3]: level 0 correlates the means of the two 3-node subtrees, level 1 the 3 siblings of each
    subtree; each level's output is broadcast back to the subtree's nodes."""
    torch.manual_seed(0)
    D, heads, L = 8, 2, 5
    mc = MultiCorrelation(AutoCorrelationLayer(D, heads), CrossCorrelationLayer(D, heads, L, dropout=0.0), [2, 3],
                          dropout=0.0).eval()
    x = torch.randn(2 * 6, L, D)  # B = 2 samples x 6 nodes
    with torch.no_grad():
        got = mc(x, x)
        nodes = x.reshape(2, 2, 3, L, D)
        top = nodes.mean(2).reshape(4, L, D)  # subtree means, 2 siblings per sample
        lvl0 = mc.cross(top, top, top, 2).reshape(2, 2, 1, L, D).expand(2, 2, 3, L, D)
        lvl1 = mc.cross(x, x, x, 3).reshape(2, 2, 3, L, D)
        ref = mc.auto(x, x, x) + ((lvl0 + lvl1) / 2).reshape(12, L, D)
    torch.testing.assert_close(got, ref)


def test_decoder_starts_from_the_window_only():
    x = torch.randn(2, 10, 3)
    seasonal, trend = decoder_start(x, label_len=4, horizon=3, kernel_size=5)
    s_full, t_full = series_decompose(x, 5)
    assert torch.equal(seasonal[:, :4], s_full[:, -4:]) and torch.equal(seasonal[:, 4:], torch.zeros(2, 3, 3))
    assert torch.equal(trend[:, :4], t_full[:, -4:])
    torch.testing.assert_close(trend[:, 4:], x.mean(1, keepdim=True).expand(2, 3, 3))
    torch.testing.assert_close(s_full + t_full, x)


def _small_model(**options):
    torch.manual_seed(0)
    opts = dict(label_len=4, n_heads=4, d_ff=32, node_list=[2, 2])
    opts.update(options)
    return create_model('timeseries', 'unireplknet_test', input_len=8, horizon=4, num_series=12, mode='paper',
                        group_size=3, embed_dim=8, mark_dim=4, coord_dim=3, forecaster='corrformer',
                        forecaster_options=opts)


def _inputs(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 8, 12, generator=g) * 5 + 10, torch.rand(b, 12, 4, generator=g) - .5,
            torch.randn(1, 12, 3, generator=g).expand(b, 12, 3))


def test_head_works_for_any_batch_and_each_sample_alone():
    m = _small_model().eval()
    assert isinstance(m.head, CorrformerHead)
    x = _inputs(3)
    with torch.no_grad():
        out = m(x)
        assert out.shape == (3, 4, 12)
        for b in range(3):  # the released encoder reshape ignores B (batch 1 only); here samples stay apart
            torch.testing.assert_close(m(tuple(t[b:b + 1] for t in x)), out[b:b + 1], rtol=1e-4, atol=1e-4)
        assert m(tuple(t[:1] for t in x)).shape == (1, 4, 12)


def test_forecast_does_not_depend_on_the_future():
    """The decoder reads the window, the calendar of the window and the horizon, and the coordinates: the future
    values are in no input; changing the horizon's calendar changes the forecast, changing the window too."""
    m = _small_model().eval()
    x, marks, coords = _inputs(2)
    with torch.no_grad():
        base = m((x, marks, coords))
        later = marks.clone()
        later[:, 8:] += 0.1
        assert not torch.allclose(m((x, later, coords)), base)
        assert not torch.allclose(m((x + torch.randn_like(x), marks, coords)), base)
    from unimodal.data.timeseries import ForecastWindows
    import numpy as np
    values = np.random.default_rng(0).normal(size=(20, 12)).astype(np.float32)
    marks_np = np.random.default_rng(1).uniform(-.5, .5, size=(20, 4)).astype(np.float32)
    ds = ForecastWindows(values, 8, 4, marks=marks_np, coords=np.zeros((12, 3), np.float32))
    (w0, m0, _), _ = ds[2]
    values[10:14] += 100.0  # the targets of window 2 (steps 10..13)
    (w1, m1, _), y1 = ForecastWindows(values, 8, 4, marks=marks_np, coords=np.zeros((12, 3), np.float32))[2]
    assert torch.equal(w0, w1) and torch.equal(m0, m1) and y1.min() > 50


def test_published_head_size():
    """What the released Corrformer decoder holds at d_model 768 (16 heads, d_ff 2048, label_len 24, H 24, c_out 11,
    1 layer, 1 causal block): per multi-correlation 2 x 4 Linear(768, 768) and a CausalBlock of two weight-normed
    Conv1d(2304, 2304, 3) (2304 = 48 channels per head x 48 steps); two of them; the 1x1 feed-forward, the trend
    Conv1d(768 -> 11, 3); the LayerNorm and Linear(768 -> 11); its DataEmbedding (Conv1d(11 -> 768, 3),
    Linear(4 -> 768), Linear(33 -> 768))."""
    lin = 768 * 768 + 768
    tcn = 2 * (2304 * 2304 * 3 + 2304 + 2304)  # weight_v, weight_g, bias of each conv
    layer = 2 * (8 * lin + tcn) + 2 * 768 * 2048 + 768 * 11 * 3
    embed = 768 * 11 * 3 + 768 * 4 + 768 * 33 + 768
    expected = layer + 2 * 768 + 768 * 11 + 11 + embed
    with torch.device('meta'):
        head = CorrformerHead(768, horizon=24, input_len=48, group_size=11, num_nodes=350, mark_dim=4, coord_dim=3,
                              label_len=24, n_heads=16, d_ff=2048, node_list=[7, 50])
    assert sum(p.numel() for p in head.parameters()) == expected == 76_404_491


def test_head_options_are_checked():
    with pytest.raises(ValueError, match='node_list'):
        _small_model(node_list=[3, 2, 2])
    with pytest.raises(ValueError, match='n_heads 5 must divide'):
        _small_model(n_heads=5)
    with pytest.raises(ValueError, match='label_len'):
        _small_model(label_len=9)
    with pytest.raises(TypeError):
        _small_model(heads=4)
    with pytest.raises(ValueError, match='drop_rate does not apply'):
        create_model('timeseries', 'unireplknet_test', input_len=8, horizon=4, num_series=12, mode='paper',
                     group_size=3, forecaster='corrformer', drop_rate=0.1)


def test_corrformer_trains_and_evaluates_through_the_engine(tmp_path):
    from unimodal.config import parse_set_overrides, resolve_run_config
    from unimodal.engine import train
    sets = ['train.device=cpu', 'train.epochs=2', 'train.max_steps_per_epoch=4', 'train.batch_size=4',
            'data.limit_eval=8', 'data.options.input_len=24', 'data.options.horizon=12', 'data.options.marks=true',
            'data.options.coords=stations_sorted.npy', 'model.adapter.mode=paper', 'model.adapter.group_size=4',
            'model.adapter.image_size=null', 'model.adapter.embed_dim=12', 'model.adapter.forecaster=corrformer',
            'model.adapter.forecaster_options={n_heads: 8, d_ff: 32, node_list: [2, 3]}',
            'train.schedule=step', 'train.gamma=0.5', 'train.step_start=1', 'train.warmup_epochs=0',
            f'data.cache_dir={tmp_path / "cache"}']
    cfg = resolve_run_config({}, {'task': 'timeseries'}, parse_set_overrides(sets))
    res = train(cfg, out_dir=tmp_path / 'run')
    assert math.isfinite(res['metrics']['mse']) and res['metrics']['num_samples'] == 8
    from unimodal.engine import evaluate_checkpoint
    from unimodal.engine.checkpoint import load_run_checkpoint
    ckpt = load_run_checkpoint(tmp_path / 'run' / 'best.pt')
    spec = ckpt.specs['timeseries']
    assert spec.input_shape == [[24, 24], [36, 4], [24, 3]] and spec.adapter_kwargs['forecaster'] == 'corrformer'
    again = evaluate_checkpoint(ckpt, resolve_run_config({}, {}, parse_set_overrides(['train.device=cpu']),
                                                         base=ckpt.config))
    assert again['metrics']['mse'] == pytest.approx(res['metrics']['mse'], rel=1e-5)


def test_head_runs_under_bf16_autocast():
    """Mixed precision reaches every op (the FFTs run in float32); the recipe itself trains in fp32."""
    m = _small_model().train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = m(_inputs(2))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    out.pow(2).mean().backward()
    assert m.head.layers[0].cross_correlation.cross.fusion[0].conv1.parametrizations.weight.original1.grad is not None
