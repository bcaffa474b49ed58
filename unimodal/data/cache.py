"""The one cache rule of every reader, and atomic writes into the cache.

Where caches go (index caches, sampled point clouds, converted arrays, built-in data sets):

1. the explicit folder (the config's ``data.cache_dir``, passed by the engine, or a reader's ``cache_dir``);
2. else ``$UNIMODAL_CACHE``;
3. else ``~/.cache/unimodal``.

Nothing is written into a data folder. A cache folder that cannot be written is a :class:`CacheDirError` naming it
and the two settings that choose another one; there is no silent fallback to another place.

Writers go through :func:`atomic_write` (a temporary file in the same folder, then ``os.replace``): readers never
see half a file, and any number of concurrent writers (DataLoader workers, DDP ranks, two runs) of the same entry
are safe, the last rename wins with identical content.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, Tuple, Union

from .errors import DataError

__all__ = ['CacheDirError', 'CACHE_ENV', 'resolve_cache_dir', 'reader_cache_dir', 'atomic_write', 'stable_key',
           'file_stamp']

CACHE_ENV = 'UNIMODAL_CACHE'
PathLike = Union[str, Path]


class CacheDirError(DataError):
    """The cache folder cannot be created or written."""


def resolve_cache_dir(explicit: Optional[PathLike] = None) -> Path:
    """The cache folder by the rule above, created if needed and checked to be writable.

    Raises:
        CacheDirError: the folder cannot be created or written (the message names it and the options).
    """
    if explicit not in (None, ''):
        path, source = Path(explicit).expanduser(), 'data.cache_dir'
    elif os.environ.get(CACHE_ENV):
        path, source = Path(os.environ[CACHE_ENV]).expanduser(), f'${CACHE_ENV}'
    else:
        path, source = Path(os.path.expanduser('~')) / '.cache' / 'unimodal', 'the default, as neither ' \
            f'data.cache_dir nor ${CACHE_ENV} is set'
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix='.write-test-', dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise CacheDirError(path, f'cache folder ({source}) is not writable ({e.strerror or e}); set data.cache_dir '
                                  f'in the config or ${CACHE_ENV} to a writable folder', reason='cache') from None
    return path


def reader_cache_dir(explicit: Optional[PathLike], reader: str) -> Path:
    """``<cache folder>/<reader>``, created (see :func:`resolve_cache_dir`); temporary files that a killed writer
    left there more than an hour ago are removed."""
    path = resolve_cache_dir(explicit) / reader
    try:
        path.mkdir(exist_ok=True)
    except OSError as e:
        raise CacheDirError(path, f'cannot create the {reader} cache folder ({e.strerror or e}); set '
                                  f'data.cache_dir or ${CACHE_ENV} to a writable folder', reason='cache') from None
    _remove_stale_temps(path)
    return path


def _remove_stale_temps(folder: Path, age_s: float = 3600.) -> None:
    now = time.time()
    with os.scandir(folder) as entries:
        for e in entries:
            if e.name.startswith('.') and e.name.endswith('.tmp'):
                try:
                    if now - e.stat().st_mtime > age_s:
                        os.unlink(e.path)
                except OSError:
                    pass  # taken by another process meanwhile


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` through ``write(file)`` on a temporary sibling that is renamed into place (or removed)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', suffix='.tmp', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as fh:
            write(fh)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def stable_key(*parts: Any) -> str:
    """16 hex digits of a sha1 over the ``repr`` of ``parts`` (the same in every process and run)."""
    return hashlib.sha1('|'.join(map(repr, parts)).encode('utf-8', 'surrogateescape')).hexdigest()[:16]


def file_stamp(path: PathLike) -> Tuple[int, int]:
    """``(size, mtime_ns)``: part of a cache key, so a changed file invalidates its entries."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns
