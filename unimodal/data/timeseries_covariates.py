"""What a forecasting window carries besides its values: calendar features of its time steps and the coordinates
of its stations (the published Corrformer / UniRepLKNet Global Temp/Wind inputs).

* :func:`time_features`: Time-Series-Library's ``timeF`` encoding (``utils/timefeatures.py`` of Autoformer, TSLib and
  Corrformer): per step, calendar fields scaled to ``[-0.5, 0.5]``; hourly data gets hour of day, day of week, day of
  month and day of year (4 features, the published ``Linear(4 -> d_model)`` input).
* :func:`load_time_stamps`: the Corrformer release's ``data_time_{split}.npy`` (the original loads it with
  ``allow_pickle=True``; here object arrays are read by a restricted unpickler that rebuilds only strings, numbers
  and date-times).
* :func:`read_station_coords` / :func:`standardize_columns`: ``stations_sorted.npy`` (stations x 3), standardised
  over the stations as the original's ``StandardScaler`` does.
"""
from __future__ import annotations

import datetime
import io
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np

from .errors import DataError
from .restricted_pickle import RestrictedUnpickler

__all__ = ['TIME_FEATURES', 'time_feature_names', 'time_features', 'load_npy', 'load_time_stamps',
           'read_station_coords', 'standardize_columns']

PathLike = Union[str, Path]

#: Calendar field -> its ``[-0.5, 0.5]`` scaling (TSLib's TimeFeature classes).
TIME_FEATURES: Dict[str, Any] = {
    'second': lambda t: t.second / 59.0 - 0.5,
    'minute': lambda t: t.minute / 59.0 - 0.5,
    'hour': lambda t: t.hour / 23.0 - 0.5,
    'weekday': lambda t: t.day_of_week / 6.0 - 0.5,
    'day': lambda t: (t.day - 1) / 30.0 - 0.5,
    'yearday': lambda t: (t.day_of_year - 1) / 365.0 - 0.5,
    'month': lambda t: (t.month - 1) / 11.0 - 0.5,
    'week': lambda t: (t.isocalendar().week.to_numpy() - 1) / 52.0 - 0.5,
}

# TSLib's time_features_from_frequency_str, by the frequency's unit (the multiple, e.g. '15min', does not matter)
_FIELDS_BY_UNIT = {
    's': ('second', 'minute', 'hour', 'weekday', 'day', 'yearday'),
    'min': ('minute', 'hour', 'weekday', 'day', 'yearday'),
    'h': ('hour', 'weekday', 'day', 'yearday'),
    'd': ('weekday', 'day', 'yearday'),
    'b': ('weekday', 'day', 'yearday'),
    'w': ('day', 'week'),
    'm': ('month',),
    'q': ('month',),
}
_UNIT_ALIASES = {'t': 'min', 'min': 'min', 's': 's', 'sec': 's', 'h': 'h', 'd': 'd', 'b': 'b', 'w': 'w', 'm': 'm',
                 'me': 'm', 'ms': 'm', 'q': 'q', 'qe': 'q', 'qs': 'q'}


def time_feature_names(freq: str = 'h') -> Tuple[str, ...]:
    """The calendar fields TSLib encodes at frequency ``freq`` (``'h'``, ``'15min'``, ``'t'``, ``'d'``, ...)."""
    m = re.fullmatch(r'\s*(\d*)\s*([A-Za-z]+)\s*', str(freq))
    unit = _UNIT_ALIASES.get(m.group(2).lower()) if m else None
    if unit is None:
        raise ValueError(f"freq {freq!r} is not a frequency with calendar features; use [multiple]unit with unit one "
                         f"of s, min (or t), h, d, b, w, m, q (e.g. 'h', '10min')")
    return _FIELDS_BY_UNIT[unit]


def time_features(times: Any, freq: str = 'h') -> np.ndarray:
    """TSLib ``timeF`` calendar features of each time stamp, ``(T, F)`` float32.

    Hourly (``freq='h'``, the published set-up): ``[hour/23, weekday/6, (day-1)/30, (yearday-1)/365] - 0.5``
    (weekday 0 = Monday), e.g. 2021-03-15 06:00 (a Monday, day 74 of the year) → ``[-0.2391, -0.5, -0.0333, -0.3]``.
    """
    import pandas as pd
    index = pd.DatetimeIndex(pd.to_datetime(np.asarray(times)))
    names = time_feature_names(freq)
    if not len(names):
        return np.zeros((len(index), 0), np.float32)
    return np.stack([np.asarray(TIME_FEATURES[n](index), dtype=np.float64) for n in names], 1).astype(np.float32)


# ------------------------------------------------------------------------------------------------------ .npy files
def _unpickle_timestamp(value: Any, freq: Any = None, tz: Any = None, reso: int = 10) -> Any:
    """Stand-in for pandas' ``_unpickle_timestamp``: a naive Timestamp from its integer value and resolution."""
    import pandas as pd
    units = {7: 's', 8: 'ms', 9: 'us', 10: 'ns'}
    if tz is not None or not isinstance(value, int) or reso not in units:
        raise pickle.UnpicklingError('refused pandas Timestamp (only naive s/ms/us/ns time stamps are allowed)')
    return pd.Timestamp(np.datetime64(value, units[reso]))


class _CovariateUnpickler(RestrictedUnpickler):
    """The numpy-only unpickler plus ``datetime`` date-times and naive pandas Timestamps (time stamp arrays)."""

    _EXTRA = {('datetime', 'datetime'): datetime.datetime, ('datetime', 'date'): datetime.date,
              ('pandas._libs.tslibs.timestamps', '_unpickle_timestamp'): _unpickle_timestamp}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._EXTRA:
            return self._EXTRA[(module, name)]
        return super().find_class(module, name)


def load_npy(path: PathLike) -> np.ndarray:
    """A ``.npy`` array: plain arrays with ``allow_pickle=False``; object arrays (strings, numbers, date-times) through
    a restricted unpickler that refuses every other global before anything runs."""
    path = Path(path)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if 'allow_pickle' not in str(e):
            raise DataError(path, f'not a readable .npy array ({e})') from e
    except OSError as e:
        raise DataError(path, f'not a readable .npy array ({e})') from e
    with open(path, 'rb') as f:
        version = np.lib.format.read_magic(f)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = header(f)
        payload = f.read()
    try:
        arr = _CovariateUnpickler(io.BytesIO(payload), encoding='latin1').load()
    except pickle.UnpicklingError as e:
        raise DataError(path, f'object array holds something other than numbers, strings or date-times ({e})') from e
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(path, f'unreadable object array ({type(e).__name__}: {e})') from e
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise DataError(path, f'the pickled payload is not the {tuple(shape)} array its header announces')
    return arr


def load_time_stamps(path: PathLike, length: int) -> np.ndarray:
    """``(length,)`` ``datetime64[ns]`` time stamps from a ``.npy`` of datetime64 values, date strings or
    date-time objects (the Corrformer ``data_time_{split}.npy``)."""
    import pandas as pd
    path = Path(path)
    arr = load_npy(path)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or len(arr) != length:
        raise DataError(path, f'expected {length} time stamps (one per step of the series), got shape {arr.shape}')
    if np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
        raise DataError(path, f'numeric time stamps ({arr.dtype}) are ambiguous (seconds? hours?); store datetime64 '
                              f'values or date strings')
    try:
        times = pd.to_datetime(arr).to_numpy(dtype='datetime64[ns]')
    except (ValueError, TypeError, OverflowError) as e:
        raise DataError(path, f'unparseable time stamps ({e})') from e
    if np.isnat(times).any():
        raise DataError(path, f'time stamp {int(np.argmax(np.isnat(times)))} is missing (NaT)')
    return times


def standardize_columns(values: np.ndarray) -> np.ndarray:
    """Each column to zero mean and unit population std over the rows (sklearn's ``StandardScaler``; a constant
    column is centred only)."""
    values = np.asarray(values, dtype=np.float64)
    std = values.std(0)
    std[~(std > 0)] = 1.0
    return ((values - values.mean(0)) / std).astype(np.float32)


def read_station_coords(path: PathLike, num_series: int) -> np.ndarray:
    """Station coordinates ``(num_series, C)`` (one row per series, in the series' order), standardised per column
    over the stations (:func:`standardize_columns`), from a ``.npy`` (e.g. the Corrformer ``stations_sorted.npy``,
    3 columns) or a ``.csv`` with a header and numeric columns only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: station coordinates file not found (a (stations, C) .npy or .csv, one row '
                                f'per series)')
    if path.suffix.lower() == '.csv':
        import pandas as pd
        df = pd.read_csv(path)
        for name in df.columns:
            if not pd.api.types.is_numeric_dtype(df[name]):
                raise DataError(path, f'column {name!r} is not numeric (coordinates only: e.g. lat, lon, elevation)')
        arr = df.to_numpy(dtype=np.float64)
    else:
        arr = load_npy(path)
        try:
            arr = np.asarray(arr, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise DataError(path, f'coordinates must be numbers ({e})') from e
    if arr.ndim != 2 or arr.shape[0] != num_series or arr.shape[1] < 1:
        raise DataError(path, f'expected one row of coordinates per series ({num_series}, C), got shape {arr.shape}')
    if not np.isfinite(arr).all():
        raise DataError(path, f'non-finite coordinate in row {int(np.argmax(~np.isfinite(arr).all(1)))}')
    return standardize_columns(arr)
