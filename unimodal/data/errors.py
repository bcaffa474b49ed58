"""Bad-input policy shared by every reader: fail naming the file, or skip explicitly and report counts."""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Dict, List, Union

_logger = logging.getLogger(__name__)

__all__ = ['DataError', 'SkipReport']


class DataError(ValueError):
    """A data file (or a line of a list file) is unusable.

    The message always names the file and says what was expected, e.g.
    ``"train/yes/a.wav: truncated WAV (header says 16000 frames, file holds 812)"``.
    """

    def __init__(self, path: Union[str, Path], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f'{self.path}: {problem}')


class SkipReport:
    """Counts and names the samples a reader skipped under ``skip_bad=True``.

    Readers call :meth:`add` for each skipped sample; the engine puts :meth:`as_dict` into the run's
    results so the number of samples actually used is part of the result. Thread-safe; DataLoader worker
    processes keep their own copy, so readers should validate files in ``__init__`` (main process) where
    they can, and report skips found later in ``__getitem__`` through the logged warning.
    """

    def __init__(self, name: str = '') -> None:
        self.name = name
        self._lock = threading.Lock()
        self.skipped: List[Dict[str, str]] = []
        self.total = 0

    def add(self, error: DataError) -> None:
        with self._lock:
            self.skipped.append({'path': error.path, 'problem': error.problem})
        _logger.warning('skipping %s', error)

    @property
    def count(self) -> int:
        return len(self.skipped)

    def as_dict(self) -> Dict[str, object]:
        return {'dataset': self.name, 'listed': self.total, 'skipped': self.count,
                'used': self.total - self.count, 'skipped_files': list(self.skipped)}
