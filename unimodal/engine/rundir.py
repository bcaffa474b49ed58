"""The run directory: who may write it, what a new run may find in it, and its metrics log.

* One run at a time: :class:`RunDirLock` holds an exclusive ``flock`` on ``<run>/.unimodal.lock`` for the run's
  life (the kernel drops it when the process dies, even by ``kill -9``, so a lock is never stale; the file is
  removed when the run ends); a second run gets a :class:`RunDirError` naming the directory and the holder's pid.
* Nothing replaced by accident: :func:`check_run_dir` refuses a directory that already holds a run (its
  checkpoints or results) or other files unless the run resumes it or ``overwrite`` is given.
* Nothing left behind: temporary files of interrupted atomic writes (``.last.pt.<random>.tmp``) are removed when
  the next run takes the directory (:func:`remove_stale_temp_files`).
* ``metrics.jsonl``: appended line by line (:func:`append_metrics`); a line torn by a crash is dropped with a
  warning when the log is read (:func:`read_metrics_log`) or cut back on resume (:func:`truncate_metrics_log`).
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from ..config.errors import ConfigError
from .checkpoint import WriteError, copy_atomic, write_text_atomic

_logger = logging.getLogger(__name__)

__all__ = ['RunDirError', 'RunDirLock', 'LOCK_NAME', 'METRICS_LOG', 'check_run_dir', 'remove_stale_temp_files',
           'remove_run_files', 'repair_best', 'append_metrics', 'read_metrics_log', 'truncate_metrics_log']

LOCK_NAME = '.unimodal.lock'
METRICS_LOG = 'metrics.jsonl'
#: What a run writes; a new run may find only REMNANTS (a run that stopped before its first checkpoint).
_RESULTS = ('last.pt', 'best.pt', 'results.json')
_REMNANTS = ('config.yaml', METRICS_LOG, LOCK_NAME)
_PLOTS = ('curves.png', 'confusion_*.png', 'forecast_*.png', 'skipped_*.jsonl')
#: Temporary files of :func:`~unimodal.engine.checkpoint.atomic_file` for the files above.
_TEMPS = tuple(f'.{name}.*.tmp' for name in (*_RESULTS, 'config.yaml', METRICS_LOG))


class RunDirError(ConfigError):
    """The run directory cannot be used: a file, in use by another run, or holding a run not to be replaced."""


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _listing(names: Sequence[str], n: int = 5) -> str:
    return ', '.join(names[:n]) + (f', ... ({len(names)} entries)' if len(names) > n else '')


def check_run_dir(out: Path, *, resume: Optional[Path] = None, overwrite: bool = False) -> None:
    """Refuse ``out`` as a run directory when it is not a directory, or when it holds another run's files.

    ``out`` may hold anything when the run resumes a checkpoint in it (``resume``), and anything with
    ``overwrite`` (the old run's files are removed when the run takes the directory, see :func:`remove_run_files`);
    otherwise only what a run leaves before its first checkpoint (``config.yaml``, ``metrics.jsonl``, temporary
    files).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunDirError(f'--out {out} is an existing file, not a directory: choose a directory for the run')
    if not out.is_dir() or overwrite:
        return
    if resume is not None and Path(resume).resolve().parent == out.resolve():
        return
    entries = sorted(p.name for p in out.iterdir())
    results = [n for n in entries if n in _RESULTS]
    if results:
        raise RunDirError(f'{out} already holds a run ({_listing(results)}): continue it with --resume auto (or '
                          f'--resume {out / "last.pt"}), replace it with --overwrite, or choose another --out')
    other = [n for n in entries if n not in _REMNANTS and not _matches(n, _TEMPS)]
    if other:
        raise RunDirError(f'{out} is not empty (it holds {_listing(other)}): choose a new or empty directory for '
                          f'--out, or pass --overwrite to write the run there anyway')


def remove_run_files(out: Path) -> List[str]:
    """Remove a previous run's files from ``out`` (checkpoints, results, log, config, plots, temporary files);
    files of other names stay. Returns the removed names."""
    removed = []
    for p in sorted(Path(out).iterdir()):
        if p.is_file() and p.name != LOCK_NAME and _matches(p.name, (*_RESULTS, *_REMNANTS, *_PLOTS, *_TEMPS)):
            p.unlink()
            removed.append(p.name)
    if removed:
        _logger.info('removed the previous run\'s files from %s: %s', out, _listing(removed, 10))
    return removed


def remove_stale_temp_files(out: Path, older_than: float) -> List[str]:
    """Remove temporary files of interrupted atomic writes (``.last.pt.<random>.tmp`` ...) modified before
    ``older_than`` (a time stamp): with the directory locked no live run writes them. Returns the removed names."""
    removed = []
    for p in sorted(Path(out).iterdir()):
        if _matches(p.name, _TEMPS) and p.is_file() and p.stat().st_mtime < older_than:
            p.unlink()
            removed.append(p.name)
    if removed:
        _logger.warning('removed %d temporary file(s) an interrupted run left in %s: %s', len(removed), out,
                        _listing(removed))
    return removed


class RunDirLock:
    """An exclusive lock on a run directory for the life of a run (``with RunDirLock(out): ...``).

    The lock file keeps the holder's pid, host and start time for the error a second run gets. On systems
    without ``fcntl`` (Windows) the directory is not locked.
    """

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.path = self.out / LOCK_NAME
        self.acquired_at: Optional[float] = None
        self._fd: Optional[int] = None

    def acquire(self) -> 'RunDirLock':
        try:
            import fcntl
        except ImportError:  # pragma: no cover  (Windows)
            _logger.debug('no fcntl: %s is not locked against concurrent runs', self.out)
            self.acquired_at = time.time()
            return self
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise WriteError(self.path, e.strerror or str(e), e.errno) from e
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 512).decode('utf-8', 'replace').strip() or 'unknown'
                os.close(fd)
                raise RunDirError(f'run directory {self.out} is in use by another unimodal run ({holder}); wait for '
                                  f'it to finish or choose another --out') from None
            if self._same_file(fd):
                break
            os.close(fd)  # the holder removed the file between our open and our lock: lock the new one
        else:  # pragma: no cover
            raise RunDirError(f'could not lock {self.path}: it keeps being replaced')
        self.acquired_at = time.time()
        stamp = time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.acquired_at))
        os.ftruncate(fd, 0)
        os.write(fd, f'pid {os.getpid()} on {socket.gethostname()}, started {stamp}\n'.encode())
        self._fd = fd
        return self

    def _same_file(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Remove the lock file and drop the lock (in this order: a run that opened the file meanwhile finds it
        replaced or gone once it holds the lock, and tries again)."""
        if self._fd is not None:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> 'RunDirLock':
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ------------------------------------------------------------------------------------------------ metrics log

def append_metrics(out: Path, record: Mapping[str, Any]) -> None:
    """Append one epoch's record to ``out/metrics.jsonl``, flushed and fsync'ed (it is written before that epoch's
    checkpoints, so no checkpoint exists whose epoch is missing from the log)."""
    path = Path(out) / METRICS_LOG
    try:
        with open(path, 'a') as f:
            f.write(json.dumps(record) + '\n')
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise WriteError(path, e.strerror or str(e), e.errno) from e


def read_metrics_log(path: Path) -> List[Dict[str, Any]]:
    """The per-epoch records of ``metrics.jsonl``; a line that is not a JSON record (torn by a crash while it was
    appended) is dropped with a warning."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text(encoding='utf-8', errors='replace').splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get('epoch'), int):
                raise ValueError('no epoch')
        except ValueError:
            _logger.warning('%s line %d is not a complete epoch record (torn by an interrupted write?); dropped: %.60s',
                            path, n, line)
            continue
        records.append(record)
    return records


def truncate_metrics_log(out: Path, epoch: int) -> None:
    """Keep the records of epochs ``<= epoch`` (a resumed run re-runs the later ones), drop torn lines, rewrite
    atomically."""
    path = Path(out) / METRICS_LOG
    if not path.is_file():
        return
    keep = [r for r in read_metrics_log(path) if r['epoch'] <= epoch]
    write_text_atomic(path, ''.join(json.dumps(r) + '\n' for r in keep))


def repair_best(out: Path, last: Path, epoch: int, best_epoch: Optional[int]) -> None:
    """``best.pt`` is copied from ``last.pt`` after ``last.pt`` is written: after a crash between the two,
    ``last`` (of ``epoch``) names its own epoch the best (``best_epoch``) while ``out/best.pt`` holds an older one.
    Redo the copy."""
    if best_epoch != epoch:
        return
    best = out / 'best.pt'
    if best.is_file():
        try:
            if int(torch.load(best, map_location='cpu', weights_only=True, mmap=True).get('epoch', -1)) == epoch:
                return
        except Exception:  # noqa: BLE001  (a damaged best.pt is replaced as well)
            pass
    copy_atomic(last, best)
    _logger.warning('best.pt did not hold the best epoch %d that %s records (a run interrupted while copying '
                    'it): copied it again', epoch, last)
