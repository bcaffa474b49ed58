"""Time-series forecasting readers: sliding windows over multi-series data, and the built-in weather set.

Formats:

* **Global Temp / Global Wind** (Corrformer release): ``{temp,wind}_global_hourly_{train,val,test}.npy`` of
  shape ``(T, 3850, 1)``, optional ``data_time_{split}.npy``. Values are stored ×10, so ``phys_scale = 0.1``
  (MSE/100 and MAE/10 give physical units). Loaded with ``np.load(allow_pickle=False)``.
* **Time-Series-Library CSV** (``weather.csv``, ``ETTh1.csv``, ...): a ``date`` column then variables. Split in
  time order with TSLib's exact borders (70/10/20; val/test windows start ``input_len`` steps before their
  border; ``ETTh*``/``ETTm*`` files use TSLib's fixed 12/4/4-month borders); standard scaler fit on the train
  part only; metrics on the normalised scale (``phys_scale = std``, ``phys_offset = mean`` per variable).
* **Any CSV with a time column** through pandas (``time_column``, ``columns`` options), split the same way.

Every dataset yields ``(x (L, N) float32, y (H, N) float32)`` windows (train stride ``stride``, val/test
stride 1) and never drops a window: the evaluation DataLoader must keep its last partial batch
(``drop_last=False``, the DataLoader default), or published numbers get skewed.

Memory: the arrays stay in files and each window's rows are read when it is drawn (:mod:`.series_store`), so the
memory of a run does not depend on the array's size. A float32 ``.npy`` is read in place; other dtypes, a CSV (parsed
once), and the filled copy of a fill policy are written once into ``<cache folder>/timeseries`` (see
:mod:`unimodal.data.cache`) and read from there. CSV standard scaling is applied to each window as it is read.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config.errors import ConfigError
from .errors import DataError, SkipReport
from .options import OPTIONAL_PATH, Option, checked_options
from .series_store import MissingScan, NpyRows
from .timeseries_builtin import BUILTIN_FILE, COORDS_FILE, make_builtin_timeseries
from .timeseries_files import (_GLOBAL_VARIABLES, FILL_POLICIES, _csv_rows, _filled, _find_global_dir, _open_global,
                               read_csv_series, read_global_npy)
from .timeseries_covariates import read_station_coords, time_feature_names, time_features

_logger = logging.getLogger(__name__)

__all__ = [
    'ForecastWindows', 'OPTIONS', 'read_csv_series', 'read_global_npy', 'split_borders', 'build_timeseries_datasets',
    'make_builtin_timeseries', 'build_weather_datasets', 'make_builtin_weather', 'detect_format', 'FILL_POLICIES',
    'BUILTIN_FILE', 'COORDS_FILE',
]

SPLITS = ('train', 'val', 'test')
#: The station coordinates file of the Corrformer release (stations x 3), also written into the built-in set.
_DAY_NS = 86_400 * 10**9

PathLike = Union[str, Path]


class ForecastWindows(Dataset):
    """Sliding ``(input, target)`` windows over a ``(T, N)`` series (an array, or :class:`NpyRows` read on demand).

    Window ``i`` starts at ``starts[i]``: ``x = values[s : s + L]``, ``y = values[s + L : s + L + H]``, each
    standardised as ``(v - mean) / std`` when ``mean``/``std`` are given (in float64, then float32). With calendar
    ``marks`` and/or station ``coords`` the input is structured: ``x = (values[s : s + L], marks[s : s + L + H],
    coords)`` (the parts present, in that order). The marks cover the horizon too: a forecaster knows the calendar of
    the steps it forecasts (the published decoder reads them), never their values.

    Attributes:
        num_series, input_len, horizon: N, L, H.
        period: seasonal period in steps (for the seasonal-naive baseline), e.g. 24 for hourly data.
        phys_scale, phys_offset: ``physical = value * phys_scale + phys_offset`` (float or ``(N,)`` tensor).
        units: the physical units (``'°C'``, ``'m/s'``, ``'data units'``).
        value_desc: what the model-space values are (e.g. ``'z-scored with train statistics'``).
        columns: series names; times: ``(T,)`` datetime64 array or ``None``; path, split: provenance.
        row_offset: the file row of ``values``' first row (a split's windows cut from a whole CSV), for
            :meth:`sample_source`.
        skip_report: :class:`SkipReport` of windows skipped for missing values (``skip_bad``), else ``None``.
        marks, coords: ``(T, F)`` calendar features and ``(N, C)`` standardised station coordinates (float32
            tensors) or ``None``; mark_dim, coord_dim: F and C (0 when absent).
    """

    def __init__(self, values: Union[np.ndarray, NpyRows], input_len: int, horizon: int, *, stride: int = 1,
                 starts: Optional[np.ndarray] = None, period: int = 24,
                 phys_scale: Union[float, torch.Tensor] = 1.0, phys_offset: Union[float, torch.Tensor] = 0.0,
                 units: str = 'data units', value_desc: str = 'raw values', columns: Optional[List[str]] = None,
                 times: Optional[np.ndarray] = None, path: PathLike = '', split: str = '',
                 skip_report: Optional[SkipReport] = None, mean: Optional[np.ndarray] = None,
                 std: Optional[np.ndarray] = None, marks: Optional[np.ndarray] = None,
                 coords: Optional[np.ndarray] = None, row_offset: int = 0) -> None:
        if len(values.shape) != 2:
            raise ValueError(f'values must be (T, N), got shape {values.shape}')
        if input_len < 1 or horizon < 1 or stride < 1:
            raise ValueError(f'input_len, horizon and stride must be >= 1, got {input_len}, {horizon}, {stride}')
        self.values = values if isinstance(values, NpyRows) else np.ascontiguousarray(values, dtype=np.float32)
        self.input_len, self.horizon = int(input_len), int(horizon)
        self.num_series = int(values.shape[1])
        last = values.shape[0] - self.input_len - self.horizon
        if starts is None:
            starts = np.arange(0, last + 1, stride, dtype=np.int64) if last >= 0 else np.zeros(0, np.int64)
        self.starts = np.asarray(starts, dtype=np.int64)
        self.period = int(period)
        self.phys_scale, self.phys_offset = phys_scale, phys_offset
        self.units, self.value_desc = units, value_desc
        self.columns = list(columns) if columns is not None else [str(i) for i in range(self.num_series)]
        self.times = times
        self.path, self.split = str(path), split
        self.row_offset = int(row_offset)
        self.skip_report = skip_report
        self._mean = None if mean is None else np.asarray(mean, dtype=np.float64)
        self._std = None if std is None else np.asarray(std, dtype=np.float64)
        if marks is not None and (marks.ndim != 2 or len(marks) != values.shape[0]):
            raise ValueError(f'marks must be (T, F) with T = {values.shape[0]}, got shape {marks.shape}')
        if coords is not None and (coords.ndim != 2 or len(coords) != self.num_series):
            raise ValueError(f'coords must be (N, C) with N = {self.num_series}, got shape {coords.shape}')
        self.marks = None if marks is None else torch.from_numpy(np.ascontiguousarray(marks, dtype=np.float32))
        self.coords = None if coords is None else torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32))
        self.mark_dim = 0 if marks is None else int(marks.shape[1])
        self.coord_dim = 0 if coords is None else int(coords.shape[1])

    def __len__(self) -> int:
        return len(self.starts)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        if isinstance(self.values, NpyRows):
            return self.values.read(start, stop)
        return self.values[start:stop]

    def __getitem__(self, index: int) -> Tuple[Any, torch.Tensor]:
        s = int(self.starts[index])
        block = self._rows(s, s + self.input_len + self.horizon)
        if self._mean is not None:
            block = (block - self._mean) / self._std
        t = torch.from_numpy(np.array(block, dtype=np.float32))
        x, y = t[:self.input_len], t[self.input_len:]
        if self.marks is None and self.coords is None:
            return x, y
        parts = [x]
        if self.marks is not None:
            parts.append(self.marks[s:s + self.input_len + self.horizon].clone())
        if self.coords is not None:
            parts.append(self.coords.clone())
        return tuple(parts), y

    def sample_source(self, index: int) -> str:
        """The file and rows (of the whole file) of window ``index``: input and horizon."""
        first = self.row_offset + int(self.starts[index])
        return f'{self.path} rows {first}..{first + self.input_len + self.horizon - 1}'

    def to_physical(self, values: torch.Tensor) -> torch.Tensor:
        """Model-space values ``(..., N)`` → physical units."""
        return values * self.phys_scale + self.phys_offset

    def __repr__(self) -> str:
        return (f'ForecastWindows({self.split or "?"}: {len(self)} windows, L={self.input_len}, H={self.horizon}, '
                f'N={self.num_series}, period={self.period}, from {self.path})')


def _train_stats(rows: NpyRows, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Per-variable mean and population std of the first ``n`` rows, NaN ignored (two chunked passes, float64)."""
    part = rows.rows(0, n)
    count = np.zeros(rows.shape[1])
    total = np.zeros(rows.shape[1])
    for _, block in part.chunks():
        ok = np.isfinite(block)
        count += ok.sum(axis=0)
        total += np.where(ok, block, 0).sum(axis=0, dtype=np.float64)
    mean = total / np.maximum(count, 1)
    dev = np.zeros(rows.shape[1])
    for _, block in part.chunks():
        d = np.where(np.isfinite(block), block - mean, 0)
        dev += (d * d).sum(axis=0)
    return mean, np.sqrt(dev / np.maximum(count, 1))


def split_borders(num_rows: int, input_len: int, rule: str = 'ratio', train_ratio: float = 0.7,
                  test_ratio: float = 0.2) -> Dict[str, Tuple[int, int]]:
    """Time-ordered split borders ``{split: (begin, end)}`` exactly as Time-Series-Library computes them.

    ``ratio`` (TSLib ``Dataset_Custom``): ``n_train = int(T·0.7)``, ``n_test = int(T·0.2)``, val gets the rest;
    val and test begin ``input_len`` rows before their border, so their first target follows the previous split.
    ``ett_hour`` / ``ett_minute`` (TSLib ``Dataset_ETT_hour/minute``): 12/4/4 months of 30 days.
    """
    if rule == 'ratio':
        n_train = int(num_rows * train_ratio)
        n_test = int(num_rows * test_ratio)
        n_val = num_rows - n_train - n_test
        b1 = [0, n_train - input_len, num_rows - n_test - input_len]
        b2 = [n_train, n_train + n_val, num_rows]
    elif rule in ('ett_hour', 'ett_minute'):
        month = 30 * 24 * (4 if rule == 'ett_minute' else 1)
        b1 = [0, 12 * month - input_len, 16 * month - input_len]
        b2 = [12 * month, 16 * month, min(20 * month, num_rows)]
    else:
        raise ValueError(f"borders must be 'auto', 'ratio', 'ett_hour' or 'ett_minute', got {rule!r}")
    return {s: (max(0, a), min(b, num_rows)) for s, a, b in zip(SPLITS, b1, b2)}


def _infer_period(times: Optional[np.ndarray], default: int = 24) -> int:
    """Steps per day from the median time step (the daily cycle), else ``default``."""
    if times is not None and len(times) > 1:
        step = int(np.median(np.diff(times.astype(np.int64))))
        if 0 < step <= _DAY_NS and _DAY_NS % step == 0:
            return _DAY_NS // step
        _logger.info('time step %d ns does not divide a day; seasonal period defaults to %d', step, default)
    return default


def _window_starts(num_rows: int, window: int, stride: int, split: str, path: PathLike, names: Sequence[str],
                   report: Optional[SkipReport], row_offset: int, scan: Optional[MissingScan]) -> np.ndarray:
    """Window starts; with a skip report, windows touching a missing value (rows of ``scan``, which covers this
    split's rows from ``row_offset`` on) are skipped and recorded."""
    last = num_rows - window
    starts = np.arange(0, last + 1, stride, dtype=np.int64) if last >= 0 else np.zeros(0, np.int64)
    if report is None:
        return starts
    report.total += len(starts)
    if scan is None:
        return starts
    bad_rows = scan.bad_rows[row_offset:row_offset + num_rows]
    if not bad_rows.any():
        return starts
    # windows [s, s + window) containing a bad row: prefix sums of the bad-row indicator
    csum = np.concatenate([[0], np.cumsum(bad_rows)])
    bad = csum[starts + window] - csum[starts] > 0
    for s in starts[bad]:
        r = int(s + np.argmax(bad_rows[s:s + window]))
        c = int(scan.first_col[r + row_offset])
        problem = (f'{split} window at row {int(s) + row_offset}: missing value in column {names[c]!r} '
                   f'at row {r + row_offset}')
        report.add(DataError(path, problem, reason='missing value'), log=False)  # one summary line below
    _logger.warning('%s: skipped %d of %d %s windows touching missing values (skip_bad)', path, int(bad.sum()),
                    len(starts), split)
    return starts[~bad]


# ------------------------------------------------------------------------------------------------- datasets
def detect_format(root: PathLike, file: Optional[str] = None) -> Tuple[str, Path]:
    """``('global_npy', folder)`` or ``('csv', csv_file)`` for a data root (file or folder)."""
    root = Path(root)
    if root.is_file():
        if root.suffix.lower() == '.csv':
            return 'csv', root
        raise DataError(root, 'expected a CSV file or a folder (Global Temp/Wind .npy files or one CSV)')
    if not root.is_dir():
        raise FileNotFoundError(f'{root}: data root does not exist')
    if file is not None:
        path = root / file
        if not path.is_file():
            raise FileNotFoundError(f'{path}: not found (option file={file!r})')
        return 'csv', path
    folder, var = _find_global_dir(root, None)
    if (folder / f'{var}_global_hourly_train.npy').is_file():
        return 'global_npy', root
    csvs = sorted(root.glob('*.csv'))
    if len(csvs) == 1:
        return 'csv', csvs[0]
    if len(csvs) > 1:
        raise DataError(root, f'several CSV files ({", ".join(p.name for p in csvs)}); choose one with the '
                              f'option file=NAME')
    raise DataError(root, 'no weather data found: expected {temp,wind}_global_hourly_{train,val,test}.npy '
                          '(Global Temp/Wind) or a CSV with a date column (Time-Series-Library layout)')


def _frequency_problem(freq: str) -> Optional[str]:
    try:
        time_feature_names(freq)
    except ValueError:
        return ("must be a frequency with calendar features, [multiple]unit with unit one of s, min (or t), h, d, b, "
                "w, m, q (e.g. 'h', '10min')")
    return None


FORMATS = ('auto', 'global_npy', 'tslib', 'csv')
BORDER_RULES = ('auto', 'ratio', 'ett_hour', 'ett_minute')
#: The options of :func:`build_timeseries_datasets` and their allowed values.
OPTIONS = {
    'format': Option(str, choices=FORMATS),
    'variable': Option(Optional[str], choices=tuple(_GLOBAL_VARIABLES)),
    'file': Option(Optional[str], expects='a file name inside the data folder'),
    'input_len': Option(int, lo=1),
    'horizon': Option(int, lo=1),
    'stride': Option(int, lo=1),
    'fill': Option(str, choices=FILL_POLICIES),
    'time_column': Option(Optional[str], expects='a column name'),
    'columns': Option(Optional[List[str]], expects='a list of column names'),
    'scale': Option(bool),
    'borders': Option(str, choices=BORDER_RULES),
    'train_ratio': Option(float, lo=0, hi=1, lo_open=True, hi_open=True),
    'test_ratio': Option(float, lo=0, hi=1, lo_open=True, hi_open=True),
    'period': Option(Optional[int], lo=1),
    'marks': Option(bool),
    'freq': Option(str, rule=_frequency_problem),
    'coords': Option(Optional[str], expects='a coordinates file (.npy)'),
    'cache_dir': OPTIONAL_PATH,
}


@checked_options(OPTIONS)
def build_timeseries_datasets(root: PathLike, *, format: str = 'auto', variable: Optional[str] = None,
                              file: Optional[str] = None, input_len: int = 48, horizon: int = 24, stride: int = 1,
                              fill: str = 'error', time_column: Optional[str] = 'date',
                              columns: Optional[Sequence[str]] = None, scale: bool = True, borders: str = 'auto',
                              train_ratio: float = 0.7, test_ratio: float = 0.2, period: Optional[int] = None,
                              skip_bad: bool = False, splits: Optional[Sequence[str]] = None, marks: bool = False,
                              freq: str = 'h', coords: Optional[str] = None, cache_dir: Optional[PathLike] = None,
                              ) -> Dict[str, ForecastWindows]:
    """Train/val/test forecasting windows from a weather / time-series data root.

    Args:
        root: a folder (Global Temp/Wind ``.npy`` files, or one CSV) or a CSV file.
        format: ``'auto'``, ``'global_npy'``, ``'tslib'`` (CSV with ``date`` first) or ``'csv'`` (any time column).
        variable: Global set: ``'temp'`` or ``'wind'`` (default: whichever is present, temp first).
        file: CSV file name inside ``root`` when it holds several.
        input_len, horizon: L and H.
        stride: step between train windows (val/test always use every window).
        fill: missing-value policy (see :func:`read_csv_series`).
        time_column, columns: CSV time column (``None``: no time column) and series columns.
        scale: CSV: z-score every variable with train-split mean/std (TSLib); metrics on that scale.
        borders: CSV split rule: ``'auto'`` (TSLib: ``ETTh*``→``ett_hour``, ``ETTm*``→``ett_minute``, else
            ``ratio``), ``'ratio'``, ``'ett_hour'``, ``'ett_minute'``.
        train_ratio, test_ratio: the ``ratio`` rule's fractions (TSLib: 0.7 / 0.2).
        period: seasonal period in steps (default: steps per day from the time column, else 24).
        skip_bad: with ``fill='error'``, skip windows touching missing values and record them in each split's
            ``skip_report`` instead of failing.
        splits: which splits to build (default all three).
        marks: give every window the calendar features of its steps (input and horizon; TSLib ``timeF`` at
            ``freq``, see :func:`~unimodal.data.timeseries_covariates.time_features`): samples become
            ``((window, marks), target)``. Needs time stamps (the CSV time column; Global: ``data_time_{split}.npy``).
        freq: the calendar features' frequency (``'h'``: hour, weekday, day, day of year, as published).
        coords: station coordinates file (relative to the data folder, or absolute; e.g. ``stations_sorted.npy``
            of the Global release): one row per series, standardised over the stations, appended to every sample's
            input (see :func:`~unimodal.data.timeseries_covariates.read_station_coords`).
        cache_dir: the cache folder of converted/filled arrays and parsed CSVs (the config's ``data.cache_dir``;
            default ``$UNIMODAL_CACHE``, else ``~/.cache/unimodal``).
    """
    splits = list(splits) if splits is not None else list(SPLITS)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f'unknown splits {unknown}; expected a subset of {SPLITS}')
    if train_ratio + test_ratio >= 1:
        raise ConfigError(f'data.options.train_ratio + data.options.test_ratio must be < 1 (validation gets the '
                          f'rest), got {train_ratio:g} + {test_ratio:g}')
    keep_missing = skip_bad and fill == 'error'
    read_fill = None if keep_missing else fill
    detected, path = detect_format(root, file)
    # the folder holding the series files: relative side files (coordinates) are found there
    data_dir = _find_global_dir(path, variable)[0] if detected == 'global_npy' else path.parent

    def coords_for(num_series: int) -> Optional[np.ndarray]:
        if coords is None:
            return None
        cpath = Path(coords).expanduser()
        return read_station_coords(cpath if cpath.is_absolute() else data_dir / cpath, num_series)

    if format == 'global_npy' and detected != 'global_npy':
        raise DataError(root, 'no {temp,wind}_global_hourly_train.npy found (Global Temp/Wind layout)')
    if format in ('tslib', 'csv') and detected != 'csv':
        raise DataError(root, 'format=csv/tslib but the folder holds Global Temp/Wind .npy files; give file=NAME')
    window = input_len + horizon
    out: Dict[str, ForecastWindows] = {}

    if detected == 'global_npy':
        folder, var = _find_global_dir(Path(root), variable)
        station_coords = None
        for split in splits:
            values, times, fpath, scan = _open_global(folder, var, split, read_fill, cache_dir, require_times=marks)
            if station_coords is None:
                station_coords = coords_for(values.shape[1])
            if values.shape[0] < window:
                raise DataError(fpath, f'{values.shape[0]} time steps < input_len + horizon = {window}')
            names = [f'station {i}' for i in range(values.shape[1])]
            report = SkipReport(f'weather/{split}') if skip_bad else None
            starts = _window_starts(values.shape[0], window, stride if split == 'train' else 1, split, fpath, names,
                                    report, 0, scan)
            out[split] = ForecastWindows(
                values, input_len, horizon, starts=starts, period=period or _infer_period(times),
                phys_scale=0.1, phys_offset=0.0, units=_GLOBAL_VARIABLES[var],
                value_desc='stored x10 (Corrformer release): MSE/100 and MAE/10 are physical', columns=names,
                times=times, path=fpath, split=split, skip_report=report,
                marks=time_features(times, freq) if marks else None, coords=station_coords)
        return out

    values, names, times = _csv_rows(path, time_column, columns, format == 'tslib', cache_dir)
    if marks and times is None:
        raise DataError(path, 'marks=true needs time stamps, but time_column is None; name the time column')
    station_coords = coords_for(values.shape[1])

    def row_desc(i: int) -> str:
        return f'row {i} (line {i + 2})'

    values, scan = _filled(values, path, read_fill, cache_dir, names, row_desc)
    rule = borders
    if rule == 'auto':
        stem = path.stem.lower()
        rule = 'ett_hour' if stem.startswith('etth') else 'ett_minute' if stem.startswith('ettm') else 'ratio'
    bounds = split_borders(values.shape[0], input_len, rule, train_ratio, test_ratio)
    for split, (b1, b2) in bounds.items():
        if b2 - b1 < window:
            raise DataError(path, f'the {split} split (rows {b1}..{b2}, rule {rule!r}) holds {max(0, b2 - b1)} '
                                  f'rows < input_len + horizon = {window}; use a shorter window or more data')
    mean = std = None
    if scale:  # applied to each window as it is read (no scaled copy of the series)
        mean, std = _train_stats(values, bounds['train'][1])  # population std, as sklearn StandardScaler
        std[~(std > 0)] = 1.0  # constant variables: sklearn's rule (scale 1)
        phys_scale, phys_offset = torch.tensor(std, dtype=torch.float32), torch.tensor(mean, dtype=torch.float32)
        desc = 'z-scored per variable with train-split mean/std (TSLib)'
    else:
        phys_scale, phys_offset, desc = 1.0, 0.0, 'raw values'
    per = period or _infer_period(times)
    for split in splits:
        b1, b2 = bounds[split]
        report = SkipReport(f'weather/{split}') if skip_bad else None
        starts = _window_starts(b2 - b1, window, stride if split == 'train' else 1, split, path, names, report, b1,
                                scan)
        out[split] = ForecastWindows(
            values.rows(b1, b2), input_len, horizon, starts=starts, period=per, phys_scale=phys_scale,
            phys_offset=phys_offset, units='data units', value_desc=desc, columns=names,
            times=times[b1:b2] if times is not None else None, path=path, split=split, skip_report=report,
            mean=mean, std=std, marks=time_features(times[b1:b2], freq) if marks else None, coords=station_coords,
            row_offset=b1)
    if scale:
        for ds in out.values():
            ds.scaler_mean, ds.scaler_std = mean, std
    return out


build_weather_datasets = build_timeseries_datasets
make_builtin_weather = make_builtin_timeseries
