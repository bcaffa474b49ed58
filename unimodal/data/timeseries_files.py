"""Time-series files: the Global Temp/Wind ``.npy`` arrays and CSVs read into row stores, with the missing-value
policies (see :mod:`unimodal.data.timeseries` for the formats)."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from .cache import atomic_write, file_stamp, reader_cache_dir, stable_key
from .errors import DataError
from .series_store import MissingScan, NpyRows, convert_npy, fill_frame, fill_npy, save_rows, scan_missing
from .timeseries_covariates import load_time_stamps

_logger = logging.getLogger(__name__)

__all__ = ['FILL_POLICIES', 'read_csv_series', 'read_global_npy']

PathLike = Union[str, Path]
FILL_POLICIES = ('error', 'ffill', 'interpolate', 'zero')
_GLOBAL_VARIABLES = {'temp': '°C', 'wind': 'm/s'}
_CACHE_VERSION = 1


# --------------------------------------------------------------------------------------------- missing values
def _missing_error(scan: MissingScan, path: PathLike, names: Sequence[str], row_desc) -> DataError:
    row = int(np.argmax(scan.bad_rows))
    return DataError(path, f"missing/non-finite value in column {names[int(scan.first_col[row])]!r} at "
                           f"{row_desc(row)} ({scan.count} missing in all); choose a fill policy (fill='ffill', "
                           f"'interpolate' or 'zero') or fix the file", reason='missing value')


def _check_fill(scan: MissingScan, fill: str, path: PathLike, names: Sequence[str], row_desc) -> None:
    """Raise for ``fill='error'`` or a column a fill policy cannot fill; log what is filled otherwise."""
    if fill not in FILL_POLICIES:
        raise ValueError(f'fill must be one of {FILL_POLICIES}, got {fill!r}')
    if fill == 'error':
        raise _missing_error(scan, path, names, row_desc)
    if scan.all_bad_col >= 0 and fill != 'zero':
        raise DataError(path, f'column {names[scan.all_bad_col]!r} has no valid value to fill from',
                        reason='missing value')
    row = int(np.argmax(scan.bad_rows))
    _logger.warning('%s: filled %d missing values with policy %r (first in column %r at %s)', path, scan.count, fill,
                    names[int(scan.first_col[row])], row_desc(row))


def _fill_missing(values: np.ndarray, fill: str, path: PathLike, names: Sequence[str], row_desc) -> np.ndarray:
    """Apply a fill policy to the non-finite entries of in-memory ``(T, N)`` values."""
    scan = scan_missing(values)
    if not scan.count:
        return values
    _check_fill(scan, fill, path, names, row_desc)
    return fill_frame(values, fill)


# ----------------------------------------------------------------------------------------------------- readers
def read_csv_series(path: PathLike, *, time_column: Optional[str] = 'date', columns: Optional[Sequence[str]] = None,
                    fill: str = 'error', require_first: bool = False,
                    ) -> Tuple[np.ndarray, List[str], Optional[np.ndarray]]:
    """Read a CSV of time-ordered series with pandas.

    Args:
        path: the CSV file.
        time_column: name of the time column (parsed as datetimes, must increase), or ``None`` if the file has none.
        columns: series columns to use (default: every column but the time column).
        fill: missing values: ``'error'`` (DataError naming the file, column and first bad row), ``'ffill'``
            (forward fill; leading gaps back-filled), ``'interpolate'`` (linear in time) or ``'zero'``.
            ``None`` keeps them as NaN (the caller handles them).
        require_first: the time column must be the first column (Time-Series-Library layout).

    Returns:
        ``values (T, N) float32``, column names, ``times (T,) datetime64[ns]`` or ``None``.
    """
    import pandas as pd
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: CSV file not found')
    try:
        df = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(path, f'not a readable CSV ({e})') from e
    if df.shape[0] == 0:
        raise DataError(path, 'CSV holds a header but no rows')

    def row_desc(i: int) -> str:
        return f'row {i} (line {i + 2})'

    times = None
    if time_column is not None:
        if time_column not in df.columns:
            raise DataError(path, f'no time column {time_column!r} (columns: {list(df.columns)}); '
                                  f'set time_column to the right name, or None')
        if require_first and df.columns[0] != time_column:
            raise DataError(path, f'Time-Series-Library layout expects {time_column!r} as the first column, '
                                  f'found {df.columns[0]!r}')
        parsed = pd.to_datetime(df[time_column], errors='coerce')
        if parsed.isna().any():
            r = int(np.argmax(parsed.isna().to_numpy()))
            raise DataError(path, f'column {time_column!r} {row_desc(r)}: unparseable time {df[time_column].iloc[r]!r}')
        times = parsed.to_numpy(dtype='datetime64[ns]')
        if len(times) > 1:
            back = np.diff(times.astype(np.int64)) <= 0
            if back.any():
                r = int(np.argmax(back)) + 1
                raise DataError(path, f'column {time_column!r} {row_desc(r)}: time {df[time_column].iloc[r]!r} '
                                      f'does not increase (rows must be in time order without duplicates)')
    if columns is None:
        names = [c for c in df.columns if c != time_column]
    else:
        names = list(columns)
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise DataError(path, f'columns {missing} not found (columns: {list(df.columns)})')
    if not names:
        raise DataError(path, 'no series columns')
    out = np.empty((len(df), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        col = df[name]
        num = pd.to_numeric(col, errors='coerce')
        non_numeric = num.isna() & col.notna()
        if non_numeric.any():
            r = int(np.argmax(non_numeric.to_numpy()))
            raise DataError(path, f'column {name!r} {row_desc(r)}: non-numeric value {col.iloc[r]!r}')
        out[:, j] = num.to_numpy(dtype=np.float64)
    names = [str(n) for n in names]
    if fill is not None:
        out = _fill_missing(out, fill, path, names, row_desc)
    return out, names, times


def _find_global_dir(root: Path, variable: Optional[str]) -> Tuple[Path, str]:
    variables = [variable] if variable else list(_GLOBAL_VARIABLES)
    for var in variables:
        for d in (root, root / f'global_{var}', root / 'global'):
            if (d / f'{var}_global_hourly_train.npy').is_file():
                return d, var
    return root, variables[0]


def _cache_file(cache_dir: Optional[PathLike], source: Path, kind: str, *key) -> Path:
    """``<cache>/timeseries/<source stem>-<kind>-<key>.npy``; the key covers the source's path, size and mtime."""
    stamp = stable_key(_CACHE_VERSION, os.path.realpath(source), file_stamp(source), kind, *key)
    return reader_cache_dir(cache_dir, 'timeseries') / f'{source.stem}-{kind}-{stamp}.npy'


def _filled(rows: NpyRows, source: Path, fill: str, cache_dir: Optional[PathLike], names: Sequence[str],
            row_desc) -> Tuple[NpyRows, Optional[MissingScan]]:
    """``rows`` with missing values handled by ``fill`` (``None``: kept, with the scan that located them)."""
    done = _cache_file(cache_dir, source, f'fill-{fill}') if fill not in (None, 'error') else None
    if done is not None and done.is_file():  # filled on an earlier run
        return NpyRows.open(done)[0], None
    scan = scan_missing(rows)
    if not scan.count or fill is None:
        return rows, (scan if scan.count else None)
    _check_fill(scan, fill, source, names, row_desc)
    return fill_npy(rows, done, fill), None


def _open_global(folder: Path, variable: str, split: str, fill: Optional[str], cache_dir: Optional[PathLike],
                 require_times: bool = False) -> Tuple[NpyRows, Optional[np.ndarray], Path, Optional[MissingScan]]:
    path = folder / f'{variable}_global_hourly_{split}.npy'
    if not path.is_file():
        raise FileNotFoundError(f'{path}: not found (Global {variable.title()} layout: '
                                f'{variable}_global_hourly_{{train,val,test}}.npy of shape (T, 3850, 1))')
    try:
        rows, c_order = NpyRows.open(path)
    except ValueError as e:  # object arrays need pickle: refused; other shapes
        raise DataError(path, f'not a plain numeric (T, stations, 1) .npy array ({e})', reason='bad array') from e
    if not (np.issubdtype(rows.dtype, np.floating) or np.issubdtype(rows.dtype, np.integer)):
        raise DataError(path, f'expected numeric values, got dtype {rows.dtype}', reason='bad array')
    if rows.dtype != np.float32 or not c_order:  # converted once into the cache, read from there
        dest = _cache_file(cache_dir, path, 'f32')
        rows = NpyRows.open(dest)[0] if dest.is_file() else convert_npy(path, dest)
    names = [f'station {i}' for i in range(rows.shape[1])]
    rows, scan = _filled(rows, path, fill, cache_dir, names, lambda r: f'time step {r}')
    times = None
    tpath = folder / f'data_time_{split}.npy'
    if tpath.is_file():
        try:
            times = load_time_stamps(tpath, len(rows))
        except DataError as e:
            if require_times:
                raise
            _logger.warning('%s; time stamps ignored', e)
    elif require_times:
        raise FileNotFoundError(f'{tpath}: not found (calendar features need the time stamps of every step: '
                                f'data_time_{{train,val,test}}.npy of the Global Temp/Wind release)')
    return rows, times, path, scan


def read_global_npy(root: PathLike, variable: str = 'temp', split: str = 'train', *, fill: Optional[str] = 'error',
                    require_times: bool = False, cache_dir: Optional[PathLike] = None,
                    ) -> Tuple[NpyRows, Optional[np.ndarray], Path]:
    """Open one split of the Corrformer Global Temp/Wind release (rows are read on demand, see :class:`NpyRows`).

    Args:
        root: folder holding ``{variable}_global_hourly_{split}.npy`` (also searched: ``root/global_{variable}``,
            ``root/global``).
        variable: ``'temp'`` or ``'wind'``.
        split: ``'train'``, ``'val'`` or ``'test'``.
        fill: missing-value policy (see :func:`read_csv_series`; the "column" is the station index). A filled copy
            (and a float32 copy of a file of another dtype) is written once into the cache folder.
        require_times: ``data_time_{split}.npy`` must exist and be readable (calendar features need it); otherwise
            a missing or unusable file only logs a warning and ``times`` is ``None``.
        cache_dir: the cache folder (default ``$UNIMODAL_CACHE``, else ``~/.cache/unimodal``).

    Returns:
        ``values (T, N)`` float32 rows (stored scale, ×10), ``times (T,)`` or ``None``, and the file read.
    """
    if variable not in _GLOBAL_VARIABLES:
        raise ValueError(f'variable must be one of {sorted(_GLOBAL_VARIABLES)}, got {variable!r}')
    folder, _ = _find_global_dir(Path(root), variable)
    return _open_global(folder, variable, split, fill, cache_dir, require_times)[:3]


def _csv_rows(path: Path, time_column: Optional[str], columns: Optional[Sequence[str]], require_first: bool,
              cache_dir: Optional[PathLike]) -> Tuple[NpyRows, List[str], Optional[np.ndarray]]:
    """A CSV's series as float32 rows in the cache (parsed by pandas on the first run only), names and times."""
    values_file = _cache_file(cache_dir, path, 'csv', time_column, None if columns is None else list(columns),
                              require_first)
    meta_file, times_file = values_file.with_suffix('.json'), values_file.with_suffix('.times.npy')
    try:
        meta = json.loads(meta_file.read_text())  # written last: its presence means the entry is complete
        rows = NpyRows.open(values_file)[0]
        times = np.load(times_file, allow_pickle=False).astype('datetime64[ns]') if meta['times'] else None
        return rows, meta['names'], times
    except (OSError, ValueError, KeyError):
        pass
    values, names, times = read_csv_series(path, time_column=time_column, columns=columns, fill=None,
                                           require_first=require_first)
    rows = save_rows(values, values_file)
    if times is not None:
        atomic_write(times_file, lambda f: np.save(f, times.astype(np.int64), allow_pickle=False))
    meta = json.dumps({'names': names, 'times': times is not None, 'source': str(path)}).encode()
    atomic_write(meta_file, lambda f: f.write(meta))
    return rows, names, times
