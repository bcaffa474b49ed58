"""Weather / time-series readers: Global .npy, TSLib CSV, generic CSV, missing values, built-in data, task glue."""
import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from unimodal.data.errors import DataError
from unimodal.data.timeseries import (BUILTIN_FILE, build_weather_datasets, make_builtin_weather, read_csv_series,
                                      split_borders)
from unimodal.tasks.timeseries import TimeSeriesTask

L, H = 8, 4


def _write_csv(path, n_rows=100, n_vars=3, time_col='date', seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n_rows, n_vars)) * [1, 10, 100][:n_vars] + [0, 5, -50][:n_vars],
                      columns=['a', 'b', 'OT'][:n_vars])
    df.insert(0, time_col, pd.date_range('2020-01-01', periods=n_rows, freq='h').astype(str))
    df.to_csv(path, index=False)
    return df


def test_global_npy_windows_scale_and_times(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, T in (('train', 30), ('val', 14), ('test', 13)):
        arrays[split] = (rng.normal(size=(T, 5, 1)) * 100).astype(np.float32)
        np.save(tmp_path / f'wind_global_hourly_{split}.npy', arrays[split])
    np.save(tmp_path / 'data_time_train.npy', np.arange(30).astype('datetime64[h]'))
    ds = build_weather_datasets(tmp_path, input_len=L, horizon=H)
    assert [len(ds[s]) for s in ('train', 'val', 'test')] == [30 - 12 + 1, 14 - 12 + 1, 13 - 12 + 1]
    tr = ds['train']
    assert (tr.num_series, tr.input_len, tr.horizon, tr.period) == (5, L, H, 24)
    assert tr.phys_scale == 0.1 and tr.units == 'm/s'  # stored x10: MSE/100, MAE/10
    x, y = tr[3]
    assert x.dtype == torch.float32 and x.shape == (L, 5) and y.shape == (H, 5)
    np.testing.assert_array_equal(x.numpy(), arrays['train'][3:3 + L, :, 0])
    np.testing.assert_array_equal(y.numpy(), arrays['train'][3 + L:3 + L + H, :, 0])
    assert tr.times is not None and ds['val'].times is None


def test_global_npy_refuses_pickled_objects(tmp_path):
    for split in ('train', 'val', 'test'):
        np.save(tmp_path / f'temp_global_hourly_{split}.npy', np.array([{'a': 1}] * 20, dtype=object),
                allow_pickle=True)
    with pytest.raises(DataError, match='temp_global_hourly_train.npy'):
        build_weather_datasets(tmp_path, input_len=L, horizon=H)


def test_tslib_csv_borders_and_train_only_scaler(tmp_path):
    df = _write_csv(tmp_path / 'weather.csv')
    ds = build_weather_datasets(tmp_path, format='tslib', input_len=L, horizon=H)
    # TSLib Dataset_Custom: n_train = 70, n_test = 20, n_val = 10; val/test begin input_len before their border
    assert split_borders(100, L) == {'train': (0, 70), 'val': (62, 80), 'test': (72, 100)}
    assert [len(ds[s]) for s in ('train', 'val', 'test')] == [70 - 11, 18 - 11, 28 - 11]
    raw = df[['a', 'b', 'OT']].to_numpy()
    mean, std = raw[:70].mean(0), raw[:70].std(0)  # population std (StandardScaler), train rows only
    tr = ds['train']
    np.testing.assert_allclose(tr.phys_offset.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(tr.phys_scale.numpy(), std, rtol=1e-5)
    assert not np.allclose(raw.mean(0), mean)  # the full-data mean differs: a leak would show
    x, y = ds['val'][0]  # first val window: inputs from rows 62..69, target rows 70..73
    np.testing.assert_allclose(x.numpy(), (raw[62:70] - mean) / std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y.numpy(), (raw[70:74] - mean) / std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tr.to_physical(y).numpy(), raw[70:74], rtol=1e-4, atol=1e-3)
    x, y = ds['test'][len(ds['test']) - 1]  # the last test window ends at the last row
    np.testing.assert_allclose(y[-1].numpy(), (raw[99] - mean) / std, rtol=1e-4, atol=1e-5)
    assert tr.period == 24 and tr.columns == ['a', 'b', 'OT']


def test_ett_borders_follow_tslib():
    assert split_borders(17420, 96, 'ett_hour') == {'train': (0, 8640), 'val': (8544, 11520),
                                                    'test': (11424, 14400)}
    assert split_borders(69680, 96, 'ett_minute')['test'] == (4 * 11520 - 96, 4 * 14400)


def test_generic_csv_time_column_and_columns(tmp_path):
    _write_csv(tmp_path / 'obs.csv', time_col='timestamp')
    with pytest.raises(DataError, match="no time column 'date'"):
        build_weather_datasets(tmp_path, input_len=L, horizon=H)
    ds = build_weather_datasets(tmp_path / 'obs.csv', time_column='timestamp', columns=['OT', 'a'], scale=False,
                                input_len=L, horizon=H, stride=3)
    assert ds['train'].columns == ['OT', 'a'] and ds['train'].num_series == 2
    assert len(ds['train']) == len(range(0, 70 - 11, 3)) and len(ds['test']) == 17  # stride: train only
    assert ds['train'].phys_scale == 1.0


def test_unordered_time_and_non_numeric_columns_are_errors(tmp_path):
    df = _write_csv(tmp_path / 'x.csv')
    df.loc[5, 'date'] = df.loc[3, 'date']
    df.to_csv(tmp_path / 'x.csv', index=False)
    with pytest.raises(DataError, match=r"x\.csv.*row 5"):
        read_csv_series(tmp_path / 'x.csv')
    df = _write_csv(tmp_path / 'x.csv')
    df['b'] = df['b'].astype(object)
    df.loc[7, 'b'] = 'n/a?'
    df.to_csv(tmp_path / 'x.csv', index=False)
    with pytest.raises(DataError, match=r"x\.csv: column 'b' row 7 .*non-numeric"):
        read_csv_series(tmp_path / 'x.csv')


def _csv_with_gaps(path):
    df = _write_csv(path, n_rows=60, n_vars=2)
    df['a'] = np.arange(60, dtype=float)
    df.loc[[0, 10, 11], 'a'] = np.nan
    df.loc[20, 'b'] = np.nan
    df.to_csv(path, index=False)
    return df


def test_missing_values_error_names_file_column_and_row(tmp_path):
    _csv_with_gaps(tmp_path / 'gaps.csv')
    with pytest.raises(DataError) as e:
        build_weather_datasets(tmp_path, input_len=L, horizon=H)
    msg = str(e.value)
    assert 'gaps.csv' in msg and "column 'a'" in msg and 'row 0 ' in msg and 'fill=' in msg


@pytest.mark.parametrize('fill,expect_a', [
    ('ffill', [1.0, 9.0, 9.0]),         # leading gap back-filled from the first value
    ('interpolate', [1.0, 10.0, 11.0]),  # linear in time
    ('zero', [0.0, 0.0, 0.0]),
])
def test_fill_policies(tmp_path, fill, expect_a):
    df = _csv_with_gaps(tmp_path / 'gaps.csv')
    values, names, _ = read_csv_series(tmp_path / 'gaps.csv', fill=fill)
    assert names == ['a', 'b'] and np.isfinite(values).all()
    np.testing.assert_allclose(values[[0, 10, 11], 0], expect_a)
    np.testing.assert_allclose(values[19:22:2, 1], df['b'].to_numpy()[19:22:2], rtol=1e-6)


def test_skip_bad_skips_and_reports_windows(tmp_path):
    _csv_with_gaps(tmp_path / 'gaps.csv')
    ds = build_weather_datasets(tmp_path, input_len=L, horizon=H, skip_bad=True, scale=False)
    tr = ds['train']  # rows 0..41; bad rows 0, 10, 11, 20 -> only windows of 12 rows avoiding them survive
    for i in range(len(tr)):
        x, y = tr[i]
        assert torch.isfinite(x).all() and torch.isfinite(y).all()
    report = tr.skip_report.as_dict()
    assert report['listed'] == 42 - 12 + 1 and report['used'] == len(tr) and report['skipped'] > 0
    assert "column 'a'" in report['skipped_files'][0]['problem']


def test_every_test_window_is_kept_with_a_partial_last_batch(tmp_path):
    _write_csv(tmp_path / 'w.csv', n_rows=100)
    test = build_weather_datasets(tmp_path, input_len=L, horizon=H, splits=['test'])['test']
    assert len(test) == 17
    batches = list(DataLoader(test, batch_size=5, shuffle=False))  # drop_last=False (the default)
    assert [len(b[0]) for b in batches] == [5, 5, 5, 2]
    seen = torch.cat([b[1] for b in batches])
    torch.testing.assert_close(seen[-1], test[16][1])


def test_bad_roots_are_explained(tmp_path):
    with pytest.raises(DataError, match='no weather data found'):
        build_weather_datasets(tmp_path)
    _write_csv(tmp_path / 'a.csv')
    _write_csv(tmp_path / 'b.csv')
    with pytest.raises(DataError, match='file=NAME'):
        build_weather_datasets(tmp_path)
    with pytest.raises(TypeError):
        build_weather_datasets(tmp_path, file='a.csv', horizonn=3)
    with pytest.raises(DataError, match='rows < input_len'):
        build_weather_datasets(tmp_path, file='a.csv', input_len=48, horizon=24)


def test_builtin_is_deterministic_and_readable(tmp_path):
    p1 = make_builtin_weather(tmp_path / 'one', seed=0, num_hours=24 * 20, num_stations=6)
    p2 = make_builtin_weather(tmp_path / 'two', seed=0, num_hours=24 * 20, num_stations=6)
    assert p1.name == BUILTIN_FILE and p1.read_bytes() == p2.read_bytes()
    assert make_builtin_weather(tmp_path / 'three', seed=1, num_hours=24 * 20, num_stations=6).read_bytes() \
        != p1.read_bytes()
    stamp = p1.stat().st_mtime_ns
    assert make_builtin_weather(tmp_path / 'one', seed=0, num_hours=24 * 20, num_stations=6) == p1  # reused ...
    assert p1.stat().st_mtime_ns == stamp
    # ... and rebuilt for other settings
    longer = make_builtin_weather(tmp_path / 'one', seed=0, num_hours=24 * 21, num_stations=6)
    assert len(pd.read_csv(longer)) == 24 * 21
    p1 = make_builtin_weather(tmp_path / 'one', seed=0, num_hours=24 * 20, num_stations=6)
    assert not list((tmp_path / 'one').glob('.weather_*'))  # no temporary file left behind
    ds = build_weather_datasets(tmp_path / 'one', input_len=48, horizon=24)
    assert ds['train'].num_series == 6 and ds['train'].period == 24
    raw = pd.read_csv(p1)
    assert raw.columns[0] == 'date' and np.isfinite(raw.iloc[:, 1:].to_numpy()).all()
    # a daily cycle dominates: lag-24 autocorrelation of the hourly differences is clearly positive
    d = np.diff(raw['st00'].to_numpy())
    assert np.corrcoef(d[:-24], d[24:])[0, 1] > 0.3


def test_task_glue(tmp_path):
    task = TimeSeriesTask()
    assert (task.name, task.adapter, task.kind, task.aliases) == ('timeseries', 'timeseries', 'forecast', ('weather',))
    cfg = task.default_config()
    assert cfg['train']['loss'] == 'mse'
    root = task.make_builtin(tmp_path)
    assert (root / BUILTIN_FILE).is_file()
    ds = task.build_datasets(root, cfg['data']['options'], splits=['train', 'test'])
    assert set(ds) == {'train', 'test'}
    kw = task.model_kwargs(cfg, ds['train'])
    assert kw == {'horizon': 24, 'input_len': 48, 'num_series': 24}
    info = task.metric_info(ds['test'])
    assert info['period'] == 24 and info['phys_scale'].shape == (24,) and 'units' in info
    with pytest.raises(TypeError):
        task.build_datasets(root, {'input_length': 48})
    # the default config builds a model that forecasts the built-in windows
    from unimodal import create_model
    model = create_model('timeseries', cfg['model']['variant'], **kw, **cfg['model']['adapter']).eval()
    x, y = next(iter(DataLoader(ds['test'], batch_size=2)))
    with torch.no_grad():
        assert model(x).shape == y.shape


# ---- memory: arrays stay in their files ----------------------------------------------------------------------
def test_global_arrays_are_read_per_window_not_loaded(tmp_path, monkeypatch):
    import pickle
    import tracemalloc

    from unimodal.data import series_store
    monkeypatch.setattr(series_store, '_CHUNK_BYTES', 1 << 20)  # chunked passes read 1 MB at a time
    rng = np.random.default_rng(0)
    for split, T in (('train', 1500), ('val', 300), ('test', 300)):
        np.save(tmp_path / f'temp_global_hourly_{split}.npy', rng.normal(size=(T, 4000, 1)).astype(np.float32))
    tracemalloc.start()
    sets = build_weather_datasets(tmp_path, input_len=L, horizon=H, cache_dir=tmp_path / 'cache')
    xs = [sets['train'][i] for i in (0, 700, len(sets['train']) - 1)]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 6 << 20  # the train array alone is 24 MB; a chunk is 1 MB (read buffer + copy + masks)
    ref = np.load(tmp_path / 'temp_global_hourly_train.npy')[:, :, 0]
    s = int(sets['train'].starts[700])
    np.testing.assert_array_equal(xs[1][0].numpy(), ref[s:s + L])
    np.testing.assert_array_equal(xs[1][1].numpy(), ref[s + L:s + L + H])
    assert not list((tmp_path / 'cache').rglob('*.npy'))  # a float32 file is read in place
    again = pickle.loads(pickle.dumps(sets['test']))  # what a spawned DataLoader worker gets
    torch.testing.assert_close(again[5][0], sets['test'][5][0])


def test_global_float64_and_fill_are_cached_once(tmp_path, monkeypatch):
    from unimodal.data import timeseries_files as ts_files
    rng = np.random.default_rng(1)
    raw = {}
    for split, T in (('train', 60), ('val', 30), ('test', 30)):
        a = rng.normal(size=(T, 7, 1))  # float64, as some copies are
        a[[0, 5, 6], 2, 0] = np.nan
        raw[split] = a[:, :, 0]
        np.save(tmp_path / f'temp_global_hourly_{split}.npy', a)
    cache = tmp_path / 'cache'
    with pytest.raises(DataError, match=r"temp_global_hourly_train\.npy: missing/non-finite value in column "
                                        r"'station 2' at time step 0 \(3 missing in all\)"):
        build_weather_datasets(tmp_path, input_len=L, horizon=H, cache_dir=cache)
    sets = build_weather_datasets(tmp_path, input_len=L, horizon=H, fill='interpolate', cache_dir=cache)
    expect = pd.DataFrame(raw['train']).interpolate(limit_direction='both').to_numpy(np.float32)
    np.testing.assert_allclose(sets['train'][0][0].numpy(), expect[:L], rtol=1e-6)
    assert len(list((cache / 'timeseries').glob('*-f32-*.npy'))) == 3
    assert len(list((cache / 'timeseries').glob('*-fill-interpolate-*.npy'))) == 3
    # a second run reads both from the cache: no conversion, no fill, no scan of the source
    for name in ('convert_npy', 'fill_npy', 'scan_missing'):
        monkeypatch.setattr(ts_files, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError('recomputed')))
    again = build_weather_datasets(tmp_path, input_len=L, horizon=H, fill='interpolate', cache_dir=cache)
    torch.testing.assert_close(again['train'][3][1], sets['train'][3][1])


def test_csv_is_parsed_once(tmp_path, monkeypatch):
    from unimodal.data import timeseries_files as ts_files
    _write_csv(tmp_path / 'weather.csv')
    first = build_weather_datasets(tmp_path, input_len=L, horizon=H, cache_dir=tmp_path / 'cache')
    def parsed_again(*a, **k):
        raise AssertionError('parsed again')
    monkeypatch.setattr(ts_files, 'read_csv_series', parsed_again)
    second = build_weather_datasets(tmp_path, input_len=L, horizon=H, cache_dir=tmp_path / 'cache')
    torch.testing.assert_close(second['val'][2][0], first['val'][2][0])
    assert second['train'].columns == ['a', 'b', 'OT'] and second['train'].times is not None
