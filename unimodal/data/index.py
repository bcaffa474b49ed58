"""Compact sample indices and list files.

DataLoader workers are forked copies of the main process. Reading a Python object in a worker writes its reference
count, so the memory page holding it is copied into the worker: an index kept as a list of per-sample tuples and
strings ends up copied into every worker (about +200 MB per worker for ImageNet's 1.28M paths). Readers therefore
keep their indices as a few NumPy arrays (:class:`StringTable` for paths: one byte buffer plus offsets; integer
arrays for labels), whose pages are only read and stay shared.

:func:`read_list_lines` reads the list files of the data sets (``testing_list.txt``, Kinetics ``train.txt``, ...)
line by line, naming the file and line of bytes that are not UTF-8; :func:`save_index` / :func:`load_index` keep
index arrays in a cache file (``.npz`` without pickle, written atomically).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np

from .cache import atomic_write
from .errors import DataError

__all__ = ['StringTable', 'read_list_lines', 'save_index', 'load_index']

PathLike = Union[str, Path]


class StringTable:
    """An immutable sequence of strings stored as one ``uint8`` buffer and ``int64`` end offsets.

    Strings are encoded with the file-system encoding (``surrogateescape``), so any file name round-trips.
    ``table[i]`` builds the string on access; nothing per entry is a Python object.
    """

    __slots__ = ('blob', 'ends')

    def __init__(self, blob: np.ndarray, ends: np.ndarray) -> None:
        self.blob = np.ascontiguousarray(blob, dtype=np.uint8)
        self.ends = np.ascontiguousarray(ends, dtype=np.int64)

    @classmethod
    def from_strings(cls, strings: Iterable[str]) -> 'StringTable':
        encoded = [os.fsencode(s) for s in strings]
        ends = np.cumsum(np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded)))
        return cls(np.frombuffer(b''.join(encoded), dtype=np.uint8), ends)

    @classmethod
    def from_chunks(cls, chunks: Iterable[Iterable[str]]) -> 'StringTable':
        """One table from successive chunks of strings (e.g. one folder at a time): only one chunk is ever held
        as Python objects, so building the index of 1.28M files does not first make 1.28M strings."""
        parts = [cls.from_strings(chunk) for chunk in chunks]
        offsets = np.cumsum([0] + [len(p.blob) for p in parts[:-1]], dtype=np.int64)
        return cls(np.concatenate([p.blob for p in parts]) if parts else np.zeros(0, np.uint8),
                   np.concatenate([p.ends + o for p, o in zip(parts, offsets)]) if parts else np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: int) -> str:
        index = int(index)
        if index < 0:
            index += len(self.ends)
        if not 0 <= index < len(self.ends):
            raise IndexError(index)
        start = int(self.ends[index - 1]) if index else 0
        return os.fsdecode(self.blob[start:int(self.ends[index])].tobytes())

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))

    def take(self, indices: np.ndarray) -> 'StringTable':
        """A new table of the entries at ``indices`` (in that order)."""
        return StringTable.from_strings(self[i] for i in np.asarray(indices, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.blob.nbytes + self.ends.nbytes


def read_list_lines(path: PathLike, what: str = 'list file') -> List[Tuple[int, str]]:
    """``(line number, stripped text)`` of the non-blank lines of a UTF-8 text file.

    Raises:
        DataError: the file cannot be read, or a line is not UTF-8 (naming the file and the line).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(path, f'unreadable {what} ({e.strerror or e})') from None
    if data.startswith(b'\xef\xbb\xbf'):
        data = data[3:]
    try:
        text = data.decode('utf-8')
    except UnicodeDecodeError as e:
        line = data.count(b'\n', 0, e.start) + 1
        raise DataError(path, f'line {line} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); '
                              f'expected a UTF-8 {what}', reason='not UTF-8') from None
    return [(i, s) for i, s in enumerate((ln.strip() for ln in text.splitlines()), 1) if s]


def save_index(path: PathLike, arrays: Dict[str, np.ndarray], tables: Optional[Dict[str, StringTable]] = None) -> None:
    """Write index arrays (and string tables) to an ``.npz`` cache file atomically."""
    out = dict(arrays)
    for name, table in (tables or {}).items():
        out[f'{name}.blob'], out[f'{name}.ends'] = table.blob, table.ends
    atomic_write(path, lambda f: np.savez(f, **out))


def load_index(path: PathLike) -> Optional[Tuple[Dict[str, np.ndarray], Dict[str, StringTable]]]:
    """``(arrays, tables)`` of a cache file written by :func:`save_index`; ``None`` if missing or damaged."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None
    tables = {k[:-5]: StringTable(data.pop(k), data.pop(k[:-5] + '.ends')) for k in list(data) if k.endswith('.blob')}
    return data, tables
