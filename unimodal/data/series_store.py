"""File-backed ``(T, N)`` series for the forecasting readers: rows are read from the ``.npy`` file when needed.

The Global Temp/Wind arrays are hundreds of MB per split. :class:`NpyRows` keeps only the file's name, shape and
data offset (taken from ``np.load(mmap_mode='r')``, which reads the header and maps nothing else) and reads the rows
a window needs with one positional read (``os.pread``): memory does not grow with the array's size, in the main
process or in any DataLoader worker, and not even page-cache pages are mapped into them.

Everything that needs a pass over the whole array works on row chunks of bounded size: :func:`scan_missing` finds
the rows holding NaN/inf, :func:`convert_npy` writes a float32 C-order copy into the cache (other dtypes, Fortran
order), and :func:`fill_npy` writes the filled copy of the fill policies (``ffill``/``interpolate``/``zero``) one
block of columns at a time (pandas on ``T x block`` values), so the peak is a block, not five copies of a split.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Tuple, Union

import numpy as np

__all__ = ['NpyRows', 'MissingScan', 'scan_missing', 'convert_npy', 'fill_frame', 'fill_npy', 'save_rows']

PathLike = Union[str, Path]
_CHUNK_BYTES = 8 << 20  # a scan holds two chunks at once (the one read and the next): a 16 MB peak
_FILL_BYTES = 64 << 20  # the one-time fill works on blocks of columns over all rows


class NpyRows:
    """Rows ``[start, stop)`` of a C-order 2-D (or ``(T, N, 1)``) ``.npy`` file, read on demand.

    Pickles as its path and layout (a DataLoader worker opens its own descriptor).
    """

    def __init__(self, path: PathLike, shape: Tuple[int, int], dtype: np.dtype, offset: int, first: int = 0) -> None:
        self.path = str(path)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        self.first = int(first)  # row offset of a slice inside the file
        self._fd: Optional[int] = None
        self._pid = -1

    @classmethod
    def open(cls, path: PathLike) -> Tuple['NpyRows', bool]:
        """``(rows, C-order)`` of a numeric ``.npy`` file; pickled object arrays raise ``ValueError``."""
        arr = np.load(path, mmap_mode='r', allow_pickle=False)
        try:
            shape, dtype, c_order, offset = arr.shape, arr.dtype, arr.flags.c_contiguous, arr.offset
        finally:
            mm = getattr(arr, '_mmap', None)
            del arr
            if mm is not None:
                mm.close()
        if len(shape) == 3 and shape[2] == 1:
            shape = shape[:2]
        if len(shape) != 2:
            raise ValueError(f'expected shape (T, stations, 1) or (T, stations), got {shape}')
        return cls(path, shape, dtype, offset), c_order

    def __getstate__(self):
        state = self.__dict__.copy()
        state['_fd'], state['_pid'] = None, -1
        return state

    def __del__(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, start: int, stop: int) -> 'NpyRows':
        """The rows ``[start, stop)`` as a new :class:`NpyRows` (nothing is read)."""
        start, stop = max(0, start), min(stop, self.shape[0])
        return NpyRows(self.path, (max(0, stop - start), self.shape[1]), self.dtype, self.offset, self.first + start)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as a new ``(stop - start, N)`` array of the file's dtype."""
        start, stop = max(0, start), min(stop, self.shape[0])
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        row = self.shape[1] * self.dtype.itemsize
        out = np.empty((max(0, stop - start), self.shape[1]), dtype=self.dtype)
        view, done, at = memoryview(out).cast('B'), 0, self.offset + (self.first + start) * row
        while done < len(view):  # straight into the array (large reads may come back in parts)
            n = os.preadv(self._fd, [view[done:]], at + done)
            if n <= 0:
                raise OSError(f'{self.path}: file ends early ({done} of {len(view)} bytes at row {self.first + start})')
            done += n
        return out

    def chunks(self, max_bytes: Optional[int] = None) -> Iterator[Tuple[int, np.ndarray]]:
        """``(first row, rows)`` over the whole array, ``max_bytes`` (default 8 MB) at a time."""
        step = max(1, (max_bytes or _CHUNK_BYTES) // max(1, self.shape[1] * self.dtype.itemsize))
        for a in range(0, self.shape[0], step):
            yield a, self.read(a, a + step)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self.read(0, self.shape[0])
        return out if dtype is None else out.astype(dtype)


class MissingScan(NamedTuple):
    bad_rows: np.ndarray  # (T,) bool: the row holds a NaN/inf
    first_col: np.ndarray  # (T,) int32: the first such column of a bad row (-1 elsewhere)
    count: int             # NaN/inf values in all
    all_bad_col: int       # a column without any finite value (-1: none)


def scan_missing(values: Union[NpyRows, np.ndarray]) -> MissingScan:
    """Where the non-finite values are, in one chunked pass."""
    chunks = values.chunks() if isinstance(values, NpyRows) else [(0, values)]
    bad_rows = np.zeros(values.shape[0], dtype=bool)
    first_col = np.full(values.shape[0], -1, dtype=np.int32)
    any_good = np.zeros(values.shape[1], dtype=bool)
    count = 0
    for a, block in chunks:
        ok = np.isfinite(block)
        any_good |= ok.any(axis=0)
        bad = ~ok.all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            bad_rows[a + rows] = True
            first_col[a + rows] = (~ok[rows]).argmax(axis=1)
            count += int((~ok).sum())
    all_bad = np.flatnonzero(~any_good)
    return MissingScan(bad_rows, first_col, count, int(all_bad[0]) if len(all_bad) else -1)


def _new_npy(path: Path, shape: Tuple[int, int]) -> Tuple[np.memmap, str]:
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    os.close(fd)
    return np.lib.format.open_memmap(tmp, mode='w+', dtype=np.float32, shape=shape), tmp


def _finish(out: np.memmap, tmp: str, path: Path) -> NpyRows:
    out.flush()
    del out
    os.replace(tmp, path)
    return NpyRows.open(path)[0]


def convert_npy(src: PathLike, dest: Path) -> NpyRows:
    """A float32 C-order copy of a numeric ``.npy`` (any dtype, either order) at ``dest``, written in chunks."""
    arr = np.load(src, mmap_mode='r', allow_pickle=False)
    if arr.ndim == 3:
        arr = arr[:, :, 0]
    out, tmp = _new_npy(dest, arr.shape)
    try:
        step = max(1, _CHUNK_BYTES // max(1, arr.shape[1] * 8))
        for a in range(0, arr.shape[0], step):
            out[a:a + step] = arr[a:a + step]
        return _finish(out, tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_rows(values: np.ndarray, dest: Path) -> NpyRows:
    """Write an in-memory ``(T, N)`` array as float32 ``.npy`` at ``dest`` (atomically) and open it."""
    out, tmp = _new_npy(dest, values.shape)
    try:
        out[:] = values
        return _finish(out, tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fill_frame(block: np.ndarray, fill: str) -> np.ndarray:
    """``(T, n)`` values with their NaN/inf replaced: ``ffill`` (leading gaps back-filled from the first value),
    ``interpolate`` (linear in time, both directions) or ``zero``; float32."""
    import pandas as pd
    df = pd.DataFrame(np.where(np.isfinite(block), block, np.nan).astype(np.float64))
    if fill == 'ffill':
        df = df.ffill().bfill()
    elif fill == 'interpolate':
        df = df.interpolate(method='linear', limit_direction='both')
    elif fill == 'zero':
        df = df.fillna(0.0)
    else:
        raise ValueError(f"fill must be 'ffill', 'interpolate' or 'zero', got {fill!r}")
    return df.to_numpy(dtype=np.float32)


def fill_npy(src: NpyRows, dest: Path, fill: str) -> NpyRows:
    """The filled copy (:func:`fill_frame`) of ``src`` at ``dest``, computed on blocks of columns (all rows each)."""
    out, tmp = _new_npy(dest, src.shape)
    try:
        width = max(1, _FILL_BYTES // max(1, src.shape[0] * 8))
        for j in range(0, src.shape[1], width):
            out[:, j:j + width] = fill_frame(np.concatenate([rows[:, j:j + width] for _, rows in src.chunks()]), fill)
        return _finish(out, tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
