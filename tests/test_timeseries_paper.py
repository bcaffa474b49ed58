"""The published time-series inputs: calendar features, time stamps and station coordinates read from disk, and the
paper-mode adapter (nodes of 11 stations, Corrformer DataEmbedding, raw reshape) against references written here
from the published equations."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from unimodal import InputShapeError, create_model
from unimodal.data.errors import DataError
from unimodal.data.timeseries import COORDS_FILE, build_timeseries_datasets, make_builtin_timeseries
from unimodal.data.timeseries_covariates import (load_npy, load_time_stamps, read_station_coords, time_feature_names,
                                                  time_features)
from unimodal.modalities.timeseries import RevIN, TimeSeriesAdapter
from unimodal.modalities.timeseries_paper import group_series, ungroup_series
from unimodal.tasks.timeseries import TimeSeriesTask


# ------------------------------------------------------------------------------------------------ calendar
def test_hourly_time_features_by_hand():
    stamps = ['2021-03-15 06:00', '2020-12-31 23:00', '2019-01-06 00:00']
    # 2021-03-15: Monday, day 74; 2020-12-31: Thursday, day 366 (leap year); 2019-01-06: Sunday, day 6
    expected = [[6 / 23 - .5, 0 / 6 - .5, 14 / 30 - .5, 73 / 365 - .5],
                [23 / 23 - .5, 3 / 6 - .5, 30 / 30 - .5, 365 / 365 - .5],
                [0 / 23 - .5, 6 / 6 - .5, 5 / 30 - .5, 5 / 365 - .5]]
    out = time_features(np.array(stamps, dtype='datetime64[ns]'), 'h')
    assert out.dtype == np.float32 and out.shape == (3, 4)
    np.testing.assert_allclose(out, expected, atol=1e-7)
    # minute data: minute of hour first (TSLib's 't'), then the hourly fields
    m = time_features(np.array(['2021-03-15 06:40'], dtype='datetime64[ns]'), '10min')
    np.testing.assert_allclose(m[0], [40 / 59 - .5, *expected[0]], atol=1e-7)
    assert time_feature_names('t') == time_feature_names('15min') and len(time_feature_names('d')) == 3
    with pytest.raises(ValueError, match='freq'):
        time_feature_names('fortnight')


def test_time_stamps_in_every_stored_form(tmp_path):
    times = pd.date_range('2020-02-28 22:00', periods=4, freq='h')
    forms = {
        'dt64': times.to_numpy(),
        'strings': np.array(times.strftime('%Y-%m-%d %H:%M:%S')),
        'datetime_objects': np.array([t.to_pydatetime() for t in times], dtype=object),
        'timestamps': np.array(list(times), dtype=object),
    }
    for name, arr in forms.items():
        np.save(tmp_path / f'{name}.npy', arr, allow_pickle=True)
        got = load_time_stamps(tmp_path / f'{name}.npy', 4)
        np.testing.assert_array_equal(got, times.to_numpy(dtype='datetime64[ns]'), err_msg=name)
    with pytest.raises(DataError, match='expected 5 time stamps'):
        load_time_stamps(tmp_path / 'dt64.npy', 5)
    np.save(tmp_path / 'ints.npy', np.arange(4))
    with pytest.raises(DataError, match='ambiguous'):
        load_time_stamps(tmp_path / 'ints.npy', 4)


class _Exploit:
    def __reduce__(self):
        return (print, ('pickle code ran',))


def test_object_arrays_refuse_anything_but_data(tmp_path, capsys):
    np.save(tmp_path / 'evil.npy', np.array([_Exploit()], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match='evil.npy.*other than numbers, strings or date-times'):
        load_npy(tmp_path / 'evil.npy')
    assert 'pickle code ran' not in capsys.readouterr().out
    with open(tmp_path / 'evil.npy', 'rb') as f:  # the file really holds a pickled global call
        assert b'print' in f.read()
    np.save(tmp_path / 'numbers.npy', np.array([[1.5, 2], [3, 4]], dtype=object), allow_pickle=True)
    assert load_npy(tmp_path / 'numbers.npy').tolist() == [[1.5, 2], [3, 4]]


def test_station_coordinates_are_standardised_over_the_stations(tmp_path):
    rng = np.random.default_rng(0)
    raw = np.stack([rng.uniform(-60, 70, 6), rng.uniform(-180, 180, 6), rng.uniform(0, 3000, 6)], 1)
    np.save(tmp_path / 'st.npy', raw)
    got = read_station_coords(tmp_path / 'st.npy', 6)
    # sklearn StandardScaler: population std per column
    np.testing.assert_allclose(got, (raw - raw.mean(0)) / raw.std(0), rtol=1e-5, atol=1e-6)
    pd.DataFrame(raw, columns=['lat', 'lon', 'elev']).to_csv(tmp_path / 'st.csv', index=False)
    np.testing.assert_allclose(read_station_coords(tmp_path / 'st.csv', 6), got, atol=1e-6)
    with pytest.raises(DataError, match=r'one row of coordinates per series \(7, C\)'):
        read_station_coords(tmp_path / 'st.npy', 7)
    pd.DataFrame({'name': list('abcdef'), 'lat': raw[:, 0]}).to_csv(tmp_path / 'named.csv', index=False)
    with pytest.raises(DataError, match="column 'name' is not numeric"):
        read_station_coords(tmp_path / 'named.csv', 6)
    with pytest.raises(FileNotFoundError, match='nope.npy'):
        read_station_coords(tmp_path / 'nope.npy', 6)


# ------------------------------------------------------------------------------------------------ readers
def _global_set(root, n=6, steps=(40, 20, 20), times='strings'):
    rng = np.random.default_rng(1)
    start = pd.Timestamp('2019-12-31 20:00')
    for split, T in zip(('train', 'val', 'test'), steps):
        np.save(root / f'temp_global_hourly_{split}.npy', rng.normal(size=(T, n, 1)).astype(np.float32) * 50)
        stamps = pd.date_range(start, periods=T, freq='h')
        start = stamps[-1] + pd.Timedelta(hours=1)
        if times == 'strings':
            np.save(root / f'data_time_{split}.npy', np.array(stamps.astype(str), dtype=object), allow_pickle=True)
    coords = rng.normal(size=(n, 3)) * [20, 90, 500]
    np.save(root / COORDS_FILE, coords)
    return coords


def test_global_reader_gives_windows_marks_and_coordinates(tmp_path):
    coords = _global_set(tmp_path)
    L, H = 8, 4
    ds = build_timeseries_datasets(tmp_path, input_len=L, horizon=H, marks=True, coords=COORDS_FILE)
    tr = ds['train']
    assert (tr.mark_dim, tr.coord_dim) == (4, 3)
    (x, marks, c), y = tr[5]
    window, target = build_timeseries_datasets(tmp_path, input_len=L, horizon=H)['train'][5]
    assert torch.equal(x, window) and torch.equal(y, target)
    stamps = pd.date_range('2019-12-31 20:00', periods=40, freq='h')[5:5 + L + H]
    np.testing.assert_allclose(marks.numpy(), time_features(stamps.to_numpy(), 'h'))  # input and horizon steps
    np.testing.assert_allclose(c.numpy(), (coords - coords.mean(0)) / coords.std(0), atol=1e-6)
    xb, yb = next(iter(DataLoader(tr, batch_size=3)))
    assert [t.shape for t in xb] == [(3, L, 6), (3, L + H, 4), (3, 6, 3)]
    # the val split reads its own time stamps
    assert ds['val'].marks[0, 0].item() == pytest.approx(time_features(np.array(['2020-01-02 12:00'],
                                                                                 dtype='datetime64[ns]'))[0, 0])


def test_marks_need_time_stamps(tmp_path):
    _global_set(tmp_path, times=None)
    with pytest.raises(FileNotFoundError, match='data_time_train.npy'):
        build_timeseries_datasets(tmp_path, input_len=8, horizon=4, marks=True)
    assert build_timeseries_datasets(tmp_path, input_len=8, horizon=4)['train'].times is None  # optional without
    with pytest.raises(FileNotFoundError, match='other.npy'):
        build_timeseries_datasets(tmp_path, input_len=8, horizon=4, coords='other.npy')


def test_builtin_set_has_times_and_coordinates(tmp_path):
    path = make_builtin_timeseries(tmp_path / 'w', num_hours=24 * 20, num_stations=6)
    raw = np.load(path.parent / COORDS_FILE)
    assert raw.shape == (6, 3) and raw.dtype == np.float64
    assert (raw[:, 0] >= 40).all() and (raw[:, 0] <= 50).all()  # latitude, degrees
    ds = build_timeseries_datasets(path.parent, input_len=48, horizon=24, marks=True, coords=COORDS_FILE)
    (x, marks, c), _ = ds['test'][0]
    assert marks.shape == (72, 4) and c.shape == (6, 3)
    # hourly steps: the hour-of-day feature advances by 1/23 per step
    np.testing.assert_allclose(np.diff(marks[:5, 0].numpy()), 1 / 23, atol=1e-6)
    kw = TimeSeriesTask().model_kwargs(None, ds['train'])
    assert kw == {'horizon': 24, 'input_len': 48, 'num_series': 6, 'mark_dim': 4, 'coord_dim': 3}


# ------------------------------------------------------------------------------------------------ paper mode
def reference_paper_grid(x, marks, coords, a):
    """The published embedding written out element by element: RevIN per station (mean/std over time, eps 1e-5,
    the node position's affine), circular conv over the node's G stations, calendar and coordinate Linears, the
    (L, D) tokens of each node read row-major into a side x side map."""
    B, L, N = x.shape
    G = a.group_size
    side = a.image_size[0]
    conv = a.embed.value.weight.detach().double()  # (D, G, 3)
    D = conv.shape[0]
    w, b = a.revin.weight.detach().double(), a.revin.bias.detach().double()
    images = []
    for s in range(B):
        for p in range(N // G):
            z = torch.zeros(G, L, dtype=torch.float64)
            for g in range(G):
                col = x[s, :, p * G + g].double()
                z[g] = (col - col.mean()) / torch.sqrt(col.var(unbiased=False) + 1e-5) * w[g] + b[g]
            tok = torch.zeros(L, D, dtype=torch.float64)
            for t in range(L):
                for j in range(3):
                    tok[t] += conv[:, :, j] @ z[:, (t + j - 1) % L]
            if marks is not None:
                tok += marks[s, :L].double() @ a.embed.time.weight.detach().double().t()
            if coords is not None:
                flat = coords[s, p * G:(p + 1) * G].reshape(-1).double()
                tok += flat @ a.embed.geo.weight.detach().double().t() + a.embed.geo.bias.detach().double()
            img = torch.zeros(side * side, dtype=torch.float64)
            img[:L * D] = tok.reshape(-1)
            images.append(img.reshape(1, side, side))
    return torch.stack(images)


@pytest.mark.parametrize('group_size,extras', [(1, False), (3, False), (3, True)])
def test_paper_grid_matches_the_published_equations(group_size, extras):
    torch.manual_seed(0)
    B, L, N, D = 2, 6, 6, 5  # 6 x 5 = 30 token values, zero-padded into a 6 x 6 map
    kw = dict(mark_dim=4, coord_dim=3) if extras else {}
    a = TimeSeriesAdapter(L, N, mode='paper', embed_dim=D, group_size=group_size, **kw).eval()
    with torch.no_grad():  # a non-trivial affine: each node position has its own pair, shared by the nodes
        a.revin.weight.copy_(torch.linspace(0.5, 1.5, group_size))
        a.revin.bias.copy_(torch.linspace(-0.2, 0.3, group_size))
    x = torch.randn(B, L, N) * 10 + 3
    marks = torch.rand(B, L + 2, 4) - 0.5 if extras else None
    coords = torch.randn(B, N, 3) if extras else None
    inp = (x, marks, coords) if extras else x
    grid, state = a(inp)
    assert grid.shape == (B * N // group_size, 1, 6, 6) and a.num_views == N // group_size
    torch.testing.assert_close(grid.double(), reference_paper_grid(x, marks, coords, a), rtol=1e-5, atol=1e-5)
    # decode inverts the normalisation exactly, the affine included
    torch.testing.assert_close(a.decode(state.normed, state), x, rtol=1e-5, atol=1e-4)


def test_unit_affine_group_revin_equals_per_station_revin():
    x = torch.randn(2, 8, 6) * 4 + 1
    grouped = TimeSeriesAdapter(8, 6, mode='paper', group_size=3, embed_dim=8)
    single = TimeSeriesAdapter(8, 6, mode='paper', group_size=1, embed_dim=8, affine='series')
    assert grouped.revin.weight.shape == (3,) and single.revin.weight.shape == (6,)
    assert torch.equal(grouped.normalize(x)[0], single.normalize(x)[0])


def test_grouping_is_consecutive_stations_per_node():
    x = torch.arange(2 * 3 * 6, dtype=torch.float32).reshape(2, 3, 6)
    g = group_series(x, 3)
    assert g.shape == (4, 3, 3)
    assert torch.equal(g[1], x[0, :, 3:6]) and torch.equal(g[2], x[1, :, 0:3])  # sample-major, node-minor
    assert torch.equal(ungroup_series(g, 2), x)


def test_paper_defaults_are_the_published_ones():
    a = TimeSeriesAdapter(48, 3850, mode='paper', embed_dim=768, mark_dim=4, coord_dim=3)
    assert (a.group_size, a.num_views, a.series_per_view, a.out_chans, a.image_size) == (11, 350, 11, 1, (192, 192))
    assert a.pos_table is None and a.series_table is None and a.embed.drop.p == 0.05
    assert a.revin.weight.shape == (11,)
    assert tuple(a.embed.value.weight.shape) == (768, 11, 3) and a.embed.value.bias is None
    assert a.embed.value.padding_mode == 'circular'
    assert tuple(a.embed.time.weight.shape) == (768, 4) and a.embed.time.bias is None
    assert tuple(a.embed.geo.weight.shape) == (768, 33) and a.embed.geo.bias is not None
    assert sum(p.numel() for p in a.parameters()) == 768 * 11 * 3 + 768 * 4 + 768 * 33 + 768 + 22
    # grid mode is unchanged: per-series affine, position and series embeddings on, no dropout
    g = TimeSeriesAdapter(48, 24)
    assert g.revin.weight.shape == (24,) and g.pos_table is not None and g.series_table is not None
    assert g.embed_drop == 0.0


def test_paper_options_are_checked():
    with pytest.raises(ValueError, match='not a multiple of 11.*group_size to a divisor of 24'):
        TimeSeriesAdapter(48, 24, mode='paper')
    with pytest.raises(ValueError, match='grid mode uses neither'):
        TimeSeriesAdapter(48, 24, mark_dim=4)
    with pytest.raises(ValueError, match="group_size applies to mode='paper'"):
        TimeSeriesAdapter(48, 24, group_size=4)
    with pytest.raises(ValueError, match="needs mode='paper'"):
        TimeSeriesAdapter(48, 24, forecaster='corrformer')
    with pytest.raises(ValueError, match="forecaster_options apply to forecaster='corrformer'"):
        TimeSeriesAdapter(48, 24, mode='paper', group_size=4, forecaster_options={'n_heads': 2})
    with pytest.raises(ValueError, match="affine='group' needs a group_size dividing 24"):
        RevIN(24, 'group', group_size=5)


def test_structured_input_must_match_the_model():
    m = create_model('timeseries', 'unireplknet_test', input_len=8, horizon=4, num_series=6, mode='paper',
                     group_size=3, mark_dim=4, coord_dim=3).eval()
    x, marks, coords = torch.randn(2, 8, 6), torch.rand(2, 12, 4), torch.randn(2, 6, 3)
    assert m((x, marks, coords)).shape == (2, 4, 6)
    with pytest.raises(InputShapeError, match=r'the tuple \(window, marks, coords\).*got 1 part'):
        m(x)
    with pytest.raises(InputShapeError, match='coords must be'):
        m((x, marks, coords[:, :5]))
    with pytest.raises(InputShapeError, match='marks must be'):
        m((x, marks[..., :3], coords))
    # calendar and coordinates reach the forecast
    with torch.no_grad():
        base = m((x, marks, coords))
        assert not torch.allclose(m((x, marks.flip(1), coords)), base)
        assert not torch.allclose(m((x, marks, coords.flip(1))), base)


def test_paper_mode_with_calendar_and_coordinates_trains_through_the_engine(tmp_path):
    from unimodal.config import parse_set_overrides, resolve_run_config
    from unimodal.engine import train
    sets = ['train.device=cpu', 'train.epochs=1', 'train.max_steps_per_epoch=3', 'train.batch_size=4',
            'data.limit_eval=8', 'model.adapter.mode=paper', 'model.adapter.group_size=4',
            'model.adapter.image_size=null', 'model.adapter.embed_dim=12', 'data.options.marks=true',
            f'data.options.coords={COORDS_FILE}', f'data.cache_dir={tmp_path / "cache"}']
    cfg = resolve_run_config({}, {'task': 'timeseries'}, parse_set_overrides(sets))
    res = train(cfg, out_dir=tmp_path / 'run')
    assert math.isfinite(res['metrics']['mse']) and res['metrics']['num_samples'] == 8
    assert res['metrics']['baselines']['persistence']['mse'] > 0  # the baselines read the window of the tuple
