"""Bad-input policy shared by every reader: fail naming the file, or skip explicitly and report counts and names.

A reader with ``skip_bad=True`` records each skipped sample in its :class:`SkipReport`. Files found bad while the
index is built (main process) are recorded at once; a sample found bad later, in ``__getitem__`` (a clip that does
not decode, NaN samples), may be found in a DataLoader worker process: the worker appends it to a spool file that
the report in the main process reads back whenever it is asked for its contents, so late skips are counted too.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
import weakref
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple, TypeVar, Union

_logger = logging.getLogger(__name__)

__all__ = ['DataError', 'SkipReport', 'load_or_next']

T = TypeVar('T')


def _infer_reason(problem: str) -> str:
    """A short category of a problem text (counts by reason): the text before any detail, numbers and names
    replaced (``"listed in testing_list.txt (line 3) but does not exist"`` -> ``"listed in testing_list.txt"``)."""
    head = re.split(r' \(|: |; ', problem, maxsplit=1)[0]
    head = re.sub(r"'[^']*'|\"[^\"]*\"", '…', head)
    return re.sub(r'\d+', 'N', head).strip()[:80] or 'unusable'


class DataError(ValueError):
    """A data file (or a line of a list file) is unusable.

    The message always names the file and says what was expected, e.g.
    ``"train/yes/a.wav: truncated WAV (header says 16000 frames, file holds 812)"``.
    ``reason`` is a short category for the counts of a skip report (``'missing'``, ``'undecodable'``, ...);
    by default it is derived from the problem text.
    """

    def __init__(self, path: Union[str, Path], problem: Optional[str] = None, reason: Optional[str] = None) -> None:
        if problem is None:  # re-raised by a DataLoader: torch passes the worker's formatted traceback alone
            path, problem = _from_worker_traceback(str(path))
        self.path = str(path)
        self.problem = problem
        self.reason = reason or _infer_reason(problem)
        super().__init__(f'{self.path}: {problem}')

    def __reduce__(self):  # keeps path/problem/reason through pickling (DataLoader workers re-raise it)
        return type(self), (self.path, self.problem, self.reason)


def _from_worker_traceback(text: str) -> Tuple[str, str]:
    """``(path, problem)`` from torch's re-raise text ``"Caught DataError in DataLoader worker process 1. Original
    Traceback ...\nunimodal.data.errors.DataError: <path>: <problem>"`` (so the error stays one line naming the
    file)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    where = re.match(r'Caught \w+ (.*?)\.$', lines[0]) if lines else None
    last = re.sub(r'^[\w.]*Error: ', '', lines[-1]) if lines else text
    path, sep, problem = last.partition(': ')
    if not sep:
        path, problem = '', last
    return path, problem + (f' ({where.group(1)})' if where else '')


def _remove_spool(path: str, owner: int) -> None:
    if os.getpid() == owner:  # a forked worker's copy of the report never removes the owner's spool
        shutil.rmtree(path, ignore_errors=True)


class SkipReport:
    """Counts and names the samples a reader skipped under ``skip_bad=True``.

    * :meth:`add` records one skipped sample (thread- and process-safe: see the module docstring); the first
      :attr:`LOG_FIRST` skips are logged one by one, the rest only counted.
    * :meth:`as_dict` is the compact summary for ``results.json``: counts, counts by reason, the first
      :attr:`LOG_FIRST` names and the file holding the full list (small at any number of skips).
    * :meth:`write` writes the full list (one JSON object per line) and remembers its path for :meth:`as_dict`.
    * :meth:`log_summary` logs one line: counts by reason and the first names.
    * :meth:`entries` / :meth:`merge` move entries between processes (e.g. DDP ranks, with ``all_gather_object``).
    """

    LOG_FIRST = 20

    def __init__(self, name: str = '') -> None:
        self.name = name
        self.total = 0
        self.full_list: Optional[str] = None
        self._lock = threading.Lock()
        self._entries: List[Dict[str, str]] = []
        self._seen: set = set()
        self._owner = os.getpid()
        self._spool = os.path.join(tempfile.gettempdir(), f'unimodal-skips-{self._owner}-{uuid.uuid4().hex[:12]}')
        self._spool_read: Dict[str, int] = {}
        self._logged = 0
        weakref.finalize(self, _remove_spool, self._spool, self._owner)

    def __getstate__(self):  # spawned DataLoader workers: everything but the lock
        state = self.__dict__.copy()
        del state['_lock']
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------- recording
    def add(self, error: DataError, log: bool = True) -> None:
        """Record ``error``'s file as skipped (logged as a warning while fewer than :attr:`LOG_FIRST` were)."""
        entry = {'path': error.path, 'problem': error.problem,
                 'reason': getattr(error, 'reason', None) or _infer_reason(error.problem)}
        if os.getpid() == self._owner:
            self._record(entry)
        else:
            self._spool_entry(entry)
        if log:
            self._log(error)

    def _log(self, error: DataError) -> None:
        with self._lock:
            self._logged += 1
            n = self._logged
        if n <= self.LOG_FIRST:
            _logger.warning('skipping %s', error)
        if n == self.LOG_FIRST:
            _logger.warning('%s: further skipped samples are counted, not logged one by one (see the summary and '
                            'the skipped-samples file)', self.name or 'data')

    def _record(self, entry: Dict[str, str]) -> None:
        key = (entry['path'], entry['problem'])
        with self._lock:
            if key not in self._seen:
                self._seen.add(key)
                self._entries.append(entry)

    def _spool_entry(self, entry: Dict[str, str]) -> None:
        os.makedirs(self._spool, exist_ok=True)
        line = (json.dumps(entry) + '\n').encode()
        # one write() of an O_APPEND file: lines of concurrent workers never interleave
        fd = os.open(os.path.join(self._spool, f'{os.getpid()}.jsonl'), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def _collect(self) -> None:
        """Read the entries worker processes spooled since the last call (owner process only)."""
        if os.getpid() != self._owner or not os.path.isdir(self._spool):
            return
        for name in sorted(os.listdir(self._spool)):
            path = os.path.join(self._spool, name)
            start = self._spool_read.get(path, 0)
            with open(path, 'rb') as f:
                f.seek(start)
                data = f.read()
            end = data.rfind(b'\n') + 1  # a line still being written is read next time
            self._spool_read[path] = start + end
            for line in data[:end].splitlines():
                self._record(json.loads(line))

    def merge(self, entries: Iterable[Dict[str, str]]) -> None:
        """Add entries recorded elsewhere (another rank's :meth:`entries`); duplicates are dropped."""
        for entry in entries:
            self._record(dict(entry))

    # ------------------------------------------------------------------------------------------- reading
    def entries(self) -> List[Dict[str, str]]:
        """Every skipped sample so far: ``{'path', 'problem', 'reason'}`` dicts in the order found."""
        self._collect()
        with self._lock:
            return list(self._entries)

    @property
    def skipped(self) -> List[Dict[str, str]]:
        return self.entries()

    @property
    def count(self) -> int:
        self._collect()
        return len(self._entries)

    def by_reason(self) -> Dict[str, int]:
        return dict(collections.Counter(e['reason'] for e in self.entries()).most_common())

    def as_dict(self, max_files: Optional[int] = None) -> Dict[str, object]:
        """Compact summary: ``dataset, listed, skipped, used, by_reason, skipped_files`` (the first ``max_files``,
        default :attr:`LOG_FIRST`), ``skipped_files_omitted`` and ``full_list`` (the file :meth:`write` wrote)."""
        entries = self.entries()
        n = self.LOG_FIRST if max_files is None else max_files
        return {'dataset': self.name, 'listed': self.total, 'skipped': len(entries),
                'used': self.total - len(entries), 'by_reason': self.by_reason(),
                'skipped_files': entries[:n], 'skipped_files_omitted': max(0, len(entries) - n),
                'full_list': self.full_list}

    def write(self, path: Union[str, Path]) -> Path:
        """Write every skipped sample to ``path`` (JSON lines, atomically); :meth:`as_dict` then names it."""
        from .cache import atomic_write
        path = Path(path)
        body = ''.join(json.dumps(e) + '\n' for e in self.entries()).encode()
        atomic_write(path, lambda f: f.write(body))
        self.full_list = str(path)
        return path

    def log_summary(self, logger: Optional[logging.Logger] = None) -> None:
        """One log line: how many were skipped, by reason, the first names and where the full list is."""
        entries = self.entries()
        if not entries:
            return
        reasons = ', '.join(f'{n} {r}' for r, n in self.by_reason().items())
        first = ', '.join(e['path'] for e in entries[:self.LOG_FIRST])
        more = f' and {len(entries) - self.LOG_FIRST} more' if len(entries) > self.LOG_FIRST else ''
        where = f'; full list: {self.full_list}' if self.full_list else ''
        (logger or _logger).warning('%s: skipped %d of %d samples (%s): %s%s%s', self.name or 'data', len(entries),
                                    self.total, reasons, first, more, where)


def load_or_next(load: Callable[[int], T], index: int, length: int, skip_bad: bool, report: SkipReport,
                 what: str, limit: int = 64) -> T:
    """``load(index)``; under ``skip_bad`` a sample found bad now is recorded in ``report`` and the next index is
    served instead (the batch stays full and every DDP rank keeps the same number of steps).

    Raises:
        DataError: without ``skip_bad``, the sample's error; with it, when ``limit`` samples in a row are bad.
    """
    try:
        return load(index)
    except DataError as e:
        if not skip_bad:
            raise
        report.add(e)
        first = e
    for step in range(1, min(length, limit)):
        try:
            return load((index + step) % length)
        except DataError as e:
            report.add(e)
    raise DataError(what, f'{min(length, limit)} samples in a row are unusable (first: {first})')
